"""Prefix trie over items' semantic IDs, for constrained generative retrieval (TIGER, LC-Rec).

Each item is a tuple of `L` codes. Token layout (as T5 expects): pad = 0 (also the decoder start
token), eos = 1, and code `c` at level `l` is token `offset + level_offsets[l] + c` with `offset = 2`,
`K` the codebook size (max code + 1 unless given) and `level_offsets[l] = l * K` by default: one
token range per level. Levels may share a range (UTGRec: levels 2 and 3 share one leaf codebook, so
`level_offsets=[0, K1, K1]`): a token then means the same code at either level, and the trie's
levels keep the positions apart.

Nodes are numbered level by level: the root is 0, then every distinct prefix of length 1, 2, ...,
L (lexicographic order inside a level). The edges are stored as CSR index lists sorted by
`parent * K + code`, so a whole beam of (node, code) pairs steps with one `searchsorted`, and the
allowed-code mask of a batch of nodes is one scatter (`allowed_mask`) -- no Python loop per beam.
Memory is O(#edges), not O(#nodes x vocab).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

PAD, EOS, OFFSET = 0, 1, 2


class SemanticIDTrie:
    def __init__(self, item_codes: Mapping[int, Sequence[int]], codebook_size: int | None = None,
                 offset: int = OFFSET, eos_token: int = EOS, level_offsets: Sequence[int] | None = None):
        if not item_codes:
            raise ValueError("item_codes is empty")
        items = np.array(sorted(int(i) for i in item_codes), dtype=np.int64)
        codes = np.array([list(item_codes[i]) for i in items], dtype=np.int64)
        if codes.ndim != 2:
            raise ValueError("every item needs the same number of codes")
        if (codes < 0).any():
            raise ValueError("codes must be >= 0")
        self.num_levels = L = codes.shape[1]
        self.codebook_size = K = int(codebook_size or codes.max() + 1)
        if codes.max() >= K:
            raise ValueError(f"code {codes.max()} >= codebook_size {K}")
        self.offset, self.eos_token = offset, eos_token
        self.level_offsets = [int(o) for o in level_offsets] if level_offsets is not None else [lv * K for lv in range(L)]
        if len(self.level_offsets) != L or min(self.level_offsets) < 0:
            raise ValueError(f"level_offsets needs {L} non-negative entries, got {level_offsets}")
        self.vocab_size = offset + max(self.level_offsets) + K
        self.level_offset = torch.tensor(self.level_offsets, dtype=torch.long)  # for tensor-valued levels

        # node ids per prefix length d = 0..L (d = 0: the root)
        node_of = np.zeros((len(items), L + 1), dtype=np.int64)
        base = 1
        self.level_base = [0]
        for d in range(1, L + 1):
            _, inv = np.unique(codes[:, :d], axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            node_of[:, d] = base + inv
            base += int(inv.max()) + 1
            self.level_base.append(node_of[:, d].min())
        self.num_nodes = base
        leaves = node_of[:, L]
        if len(np.unique(leaves)) != len(items):
            raise ValueError("two items share the same code tuple; resolve collisions (extra level) first")

        parents = node_of[:, :L].reshape(-1)
        children = node_of[:, 1:].reshape(-1)
        edge_codes = codes.reshape(-1)
        keys, first = np.unique(parents * K + edge_codes, return_index=True)  # sorted, deduplicated
        self.edge_key = torch.from_numpy(keys)
        self.edge_child = torch.from_numpy(children[first])
        self.edge_code = torch.from_numpy(edge_codes[first])
        # CSR row pointers: node n's edges are edge_key[ptr[n]:ptr[n+1]]
        self.ptr = torch.from_numpy(np.searchsorted(keys, np.arange(base + 1) * K))
        node_item = np.full(base, -1, dtype=np.int64)
        node_item[leaves] = items
        self.node_item = torch.from_numpy(node_item)  # leaf node -> item id, -1 elsewhere
        self.items = torch.from_numpy(items)
        self.codes = torch.from_numpy(codes)

    # -- device ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.edge_key.device

    def to(self, device: torch.device | str) -> SemanticIDTrie:
        for name in ("edge_key", "edge_child", "edge_code", "ptr", "node_item", "items", "codes", "level_offset"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    # -- tokens -----------------------------------------------------------------------------
    def token(self, level: int, code: int | torch.Tensor):
        return self.offset + self._level_start(level) + code

    def _level_start(self, level: int | torch.Tensor):
        return self.level_offset[level] if torch.is_tensor(level) else self.level_offsets[level]

    def token_to_code(self, level: int, tokens: torch.Tensor) -> torch.Tensor:
        """Code of `tokens` at `level`, or -1 where a token is not a level-`level` code."""
        c = tokens - self.offset - self._level_start(level)
        return torch.where((c >= 0) & (c < self.codebook_size), c, torch.full_like(c, -1))

    # -- Python API (one prefix) --------------------------------------------------------------
    def walk(self, prefix_tokens: Sequence[int]) -> int:
        """Node reached by `prefix_tokens` (code tokens, no decoder start), -1 if not a prefix."""
        node = torch.zeros(1, dtype=torch.long, device=self.device)
        for level, tok in enumerate(prefix_tokens):
            if level >= self.num_levels:
                return -1
            code = self.token_to_code(level, torch.tensor([int(tok)], device=self.device))
            node = self.step(node, code)
        return int(node)

    def allowed_next(self, prefix_tokens: Sequence[int]) -> list[int]:
        """Token ids that extend `prefix_tokens` towards some item; [eos] once an item is complete."""
        depth = len(prefix_tokens)
        node = self.walk(prefix_tokens)
        if node < 0:
            return []
        if depth == self.num_levels:
            return [self.eos_token]
        lo, hi = int(self.ptr[node]), int(self.ptr[node + 1])
        return [int(self.token(depth, c)) for c in self.edge_code[lo:hi].tolist()]

    def prefix_allowed_tokens_fn(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        """For HF `generate(prefix_allowed_tokens_fn=...)`: drops the decoder start token."""
        allowed = self.allowed_next(input_ids[1:].tolist())
        return allowed or [self.eos_token]

    def item_of(self, tokens: Sequence[int]) -> int:
        """Item id of a complete code-token tuple, -1 if it is not an item."""
        if len(tokens) != self.num_levels:
            return -1
        node = self.walk(tokens)
        return int(self.node_item[node]) if node >= 0 else -1

    # -- vectorised API (beam search) ---------------------------------------------------------
    def step(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Child of each (node, code) pair; -1 where the node is dead or the edge does not exist."""
        K = self.codebook_size
        key = nodes.clamp(min=0) * K + codes.clamp(min=0)
        pos = torch.searchsorted(self.edge_key, key).clamp(max=len(self.edge_key) - 1)
        ok = (self.edge_key[pos] == key) & (nodes >= 0) & (codes >= 0)
        return torch.where(ok, self.edge_child[pos], torch.full_like(key, -1))

    def allowed_mask(self, nodes: torch.Tensor) -> torch.Tensor:
        """[n, K] bool: which codes may follow each node (all False for dead nodes, -1)."""
        flat = nodes.reshape(-1)
        alive = flat >= 0
        safe = flat.clamp(min=0)
        start = self.ptr[safe]
        counts = torch.where(alive, self.ptr[safe + 1] - start, torch.zeros_like(start))
        mask = torch.zeros(len(flat), self.codebook_size, dtype=torch.bool, device=flat.device)
        total = int(counts.sum())
        if total:
            rows = torch.repeat_interleave(torch.arange(len(flat), device=flat.device), counts)
            first = torch.cumsum(counts, 0) - counts
            edge = start[rows] + torch.arange(total, device=flat.device) - first[rows]
            mask[rows, self.edge_code[edge]] = True
        return mask.view(*nodes.shape, self.codebook_size)

    def dense_transitions(self, level: int) -> torch.Tensor:
        """[#nodes at prefix length `level`, K] child-node table (-1 = no edge), for small tries."""
        lo = self.level_base[level]
        hi = self.level_base[level + 1] if level + 1 < len(self.level_base) else self.num_nodes
        nodes = torch.arange(lo, hi, device=self.device)
        codes = torch.arange(self.codebook_size, device=self.device)
        return self.step(nodes[:, None].expand(-1, len(codes)), codes[None].expand(len(nodes), -1))
