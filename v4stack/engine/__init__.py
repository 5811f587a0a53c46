"""The serving engine: requests, scheduler, paged hybrid cache, model runner, sampler, LLM and async APIs."""
