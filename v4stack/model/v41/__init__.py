"""DeepSeek-V4.1 (CSA2 attention, FP4 compressed KV, single-pass mHC, Engram, DSpark), built from the V4 modules
of ``v4stack.model`` where the maths is shared. Chosen by ``modelio.inventory.build_model`` from the config."""
