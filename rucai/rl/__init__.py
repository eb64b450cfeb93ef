"""Shared RL building blocks (`rucai.rl.core`: advantages, KL, clipped loss, update schedule;
`rucai.rl.rewards`: named reward registries). Import the submodules; nothing heavy here."""
