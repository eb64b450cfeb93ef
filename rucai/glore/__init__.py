"""GLoRE (Tang, Wang et al., ACL 2025): long chain-of-thought unlocked by editing the hidden states
of an instruct model, training-free. `method` (prompts, the style vector, the domain memory, the
behavioural measures, the linear probe) over `rucai.llm.steering`; tasks in `rucai.glore.tasks`."""
