"""TIGER (Rajput et al., NeurIPS 2023, "Recommender Systems with Generative Retrieval").

Follows MTGRec's / LC-Rec's implementation (RUCAIBox): items are tuples of `L` semantic-ID codes;
the encoder reads the code tokens of the last `max_len` history items (item -> L tokens) + eos, a
small T5 (built from a config, random init) generates the next item's L code tokens, trained with
teacher-forced cross-entropy on `codes + eos`. Evaluation: beam search over exactly L steps
(no eos step, as MTGRec's `beam_search`), optionally constrained by a prefix trie (LC-Rec's
`prefix_allowed_tokens_fn`); each beam maps back to an item, and Recall@K / NDCG@K come from the
target's rank among the beams (not in the beams = miss; an invalid tuple counts as a miss in its
rank slot, as the authors' evaluator, or is dropped with `invalid_beams=drop`). Optionally
(`user_token`, TIGER's paper: user ids hashed into 2,000 buckets; MTGRec's `n_user_tokens: 1`) one
user token, `user % buckets` after the code tokens, is prepended to the encoder input.

Beam search: encoder once per user; step 0 decodes one row per user, then the KV cache (incl.
cross-attention keys/values, computed once per user) is expanded/reordered to B x beam rows; each
step scores `beam_score + log_softmax` over the level-l codes (or the whole vocabulary when
unconstrained), masks codes the trie does not allow (HF semantics: mask after log_softmax, no
renormalisation), and takes one top-k over beam x K per user.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration

from rucai.errors import UserError
from rucai.eval.ranking import topk_metrics
from rucai.models.seqrec import SeqRecModule
from rucai.models.trie import EOS, PAD, SemanticIDTrie


def load_item_codes(item_codes: Mapping | str | Path) -> dict[int, list[int]]:
    """`{item_id: [codes]}` from a dict or a JSON file (keys may be strings)."""
    if isinstance(item_codes, str | Path):
        with open(item_codes) as f:
            item_codes = json.load(f)
    return {int(k): [int(c) for c in v] for k, v in item_codes.items()}


class FastDecoder:
    """One-token-per-beam T5 decoder step that shares each user's cross-attention keys/values.

    HF's cache would copy the cross-attention K/V of every user to each of its beams (~1 MB per
    beam for 20 history items) and reorder them every step; here the beams of a user are the
    query positions of one cross-attention call over that user's K/V (computed once), and only
    the small self-attention cache (<= L tokens) is reordered. Same maths as `T5Stack` in eval.
    """

    def __init__(self, t5: T5ForConditionalGeneration, enc_h: torch.Tensor, enc_mask: torch.Tensor):
        self.t5, self.dec = t5, t5.get_decoder()
        att0 = self.dec.block[0].layer[0].SelfAttention
        self.H, self.dkv = att0.n_heads, att0.key_value_proj_dim
        B, S, _ = enc_h.shape
        self.cross = []
        for blk in self.dec.block:
            ea = blk.layer[1].EncDecAttention
            k = ea.k(enc_h).view(B, S, self.H, self.dkv).transpose(1, 2)
            v = ea.v(enc_h).view(B, S, self.H, self.dkv).transpose(1, 2)
            self.cross.append((k, v))
        neg = torch.finfo(enc_h.dtype).min
        self.cross_bias = ((1.0 - enc_mask.to(enc_h.dtype)) * neg).view(B, 1, 1, S)
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.pos = 0
        self.scale = self.t5.model_dim**-0.5 if t5.config.scale_decoder_outputs else 1.0

    def reorder(self, rows: torch.Tensor) -> None:
        if self.self_kv is not None:
            self.self_kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.self_kv]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, k] (the last token of each beam) -> next-token logits [B, k, V]."""
        B, k = tokens.shape
        N, H, dkv = B * k, self.H, self.dkv
        h = self.dec.embed_tokens(tokens.reshape(N, 1))
        t = self.pos + 1
        bias = self.dec.block[0].layer[0].SelfAttention.compute_bias(1, t, device=h.device, past_seen_tokens=self.pos)
        new_kv = []
        for i, blk in enumerate(self.dec.block):
            sa = blk.layer[0].SelfAttention
            x = blk.layer[0].layer_norm(h)
            q = sa.q(x).view(N, 1, H, dkv).transpose(1, 2)
            kk = sa.k(x).view(N, 1, H, dkv).transpose(1, 2)
            vv = sa.v(x).view(N, 1, H, dkv).transpose(1, 2)
            if self.self_kv is not None:
                kk = torch.cat([self.self_kv[i][0], kk], 2)
                vv = torch.cat([self.self_kv[i][1], vv], 2)
            new_kv.append((kk, vv))
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=bias, scale=1.0)
            h = h + sa.o(a.transpose(1, 2).reshape(N, 1, H * dkv))
            ca = blk.layer[1].EncDecAttention
            x = blk.layer[1].layer_norm(h)
            q = ca.q(x).view(B, k, H, dkv).transpose(1, 2)  # beams = query positions
            ck, cv = self.cross[i]
            a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=self.cross_bias, scale=1.0)
            h = h + ca.o(a.transpose(1, 2).reshape(N, 1, H * dkv))
            ff = blk.layer[2]
            h = h + ff.DenseReluDense(ff.layer_norm(h))
        self.self_kv = new_kv
        self.pos = t
        h = self.dec.final_layer_norm(h) * self.scale
        return self.t5.lm_head(h).view(B, k, -1)


@torch.no_grad()
def beam_search(
    t5: T5ForConditionalGeneration,
    trie: SemanticIDTrie,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_beams: int = 20,
    constrained: bool = True,
    free_prefix: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched beam search over the trie's L levels (T5 must be in eval mode).

    `free_prefix` > 0 (STREAM-Rec's thinking tokens): that many steps first, each over every code
    token of the trie's vocabulary (any level; no trie), then the L item levels as usual, so every
    beam still ends on a valid item when `constrained`.

    Returns (items [B, beam] (-1 = not an item), tokens [B, beam, free_prefix + L], scores [B, beam])
    sorted by score (sum of log-probs), best first; dead beams (fewer valid continuations than
    beams) have score -inf and item -1.
    """
    B = input_ids.size(0)
    L, K = trie.num_levels, trie.codebook_size
    dev = input_ids.device
    enc_h = t5.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
    decoder = FastDecoder(t5, enc_h, attention_mask)
    last = torch.full((B, 1), t5.config.decoder_start_token_id, dtype=torch.long, device=dev)
    scores = torch.zeros(B, 1, device=dev)
    nodes = torch.zeros(B, 1, dtype=torch.long, device=dev)  # trie root
    tokens = torch.zeros(B, 1, 0, dtype=torch.long, device=dev)
    k = 1
    lo_code, hi_code = trie.offset, trie.vocab_size  # the code tokens (no pad/eos, no user tokens)
    for step in range(free_prefix):
        logp = torch.log_softmax(decoder(last).float(), dim=-1)[..., lo_code:hi_code]  # [B, k, C]
        width = logp.size(-1)
        cand = (scores.unsqueeze(-1) + logp).view(B, k * width)
        new_k = min(num_beams, k * width)
        scores, idx = cand.topk(new_k, dim=1)
        parent, tok = idx // width, idx % width + lo_code
        tokens = torch.cat([tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, step)), tok.unsqueeze(-1)], -1)
        nodes = nodes.gather(1, parent)
        decoder.reorder((torch.arange(B, device=dev).unsqueeze(1) * k + parent).view(-1))
        last, k = tok, new_k
    for level in range(L):
        logp = torch.log_softmax(decoder(last).float(), dim=-1)  # [B, k, V]
        if constrained:
            lo = trie.token(level, 0)
            cand = logp[..., lo:lo + K].masked_fill(~trie.allowed_mask(nodes), float("-inf"))
        else:
            cand = logp
        width = cand.size(-1)
        cand = (scores.unsqueeze(-1) + cand).view(B, k * width)
        new_k = min(num_beams, k * width)
        scores, idx = cand.topk(new_k, dim=1)
        parent, choice = idx // width, idx % width
        if constrained:
            code, tok = choice, trie.token(level, choice)
        else:
            tok = choice
            code = trie.token_to_code(level, tok)
        nodes = trie.step(nodes.gather(1, parent), code)
        nodes = torch.where(torch.isfinite(scores), nodes, torch.full_like(nodes, -1))
        tokens = torch.cat([tokens.gather(1, parent.unsqueeze(-1).expand(-1, -1, free_prefix + level)),
                            tok.unsqueeze(-1)], -1)
        if level + 1 < L:
            decoder.reorder((torch.arange(B, device=dev).unsqueeze(1) * k + parent).view(-1))
            last = tok
        k = new_k
    items = torch.where(nodes >= 0, trie.node_item[nodes.clamp(min=0)], torch.full_like(nodes, -1))
    if k < num_beams:  # fewer candidates than beams (tiny vocabularies)
        pad = num_beams - k
        items = torch.cat([items, items.new_full((B, pad), -1)], 1)
        scores = torch.cat([scores, scores.new_full((B, pad), float("-inf"))], 1)
        tokens = torch.cat([tokens, tokens.new_zeros(B, pad, free_prefix + L)], 1)
    return items, tokens, scores


@torch.no_grad()
def sample_sequences(
    t5: T5ForConditionalGeneration,
    trie: SemanticIDTrie,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n: int,
    free_prefix: int = 0,
    temperature: float = 1.0,
    constrained: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` sampled outputs per input (RL rollouts): `free_prefix` tokens over every code token, then
    the L item levels, each from its level's codes (masked by the trie when `constrained`, so every
    sample is an item; else any code of the level, and a tuple that is no item gets item -1).

    Returns (items [B, n], tokens [B, n, free_prefix + L])."""
    B = input_ids.size(0)
    L, K = trie.num_levels, trie.codebook_size
    dev = input_ids.device
    enc_h = t5.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
    decoder = FastDecoder(t5, enc_h, attention_mask)
    last = torch.full((B, n), t5.config.decoder_start_token_id, dtype=torch.long, device=dev)
    nodes = torch.zeros(B, n, dtype=torch.long, device=dev)
    out = []

    def draw(logits: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits.float() / max(temperature, 1e-6), -1)
        return torch.multinomial(p.view(-1, p.size(-1)), 1, generator=generator).view(B, n)

    for _ in range(free_prefix):
        tok = draw(decoder(last)[..., trie.offset:trie.vocab_size]) + trie.offset
        out.append(tok)
        last = tok
    for level in range(L):
        lo = trie.token(level, 0)
        logits = decoder(last)[..., lo:lo + K].float()
        if constrained:
            logits = logits.masked_fill(~trie.allowed_mask(nodes), float("-inf"))
        code = draw(logits)
        nodes = trie.step(nodes, code)
        tok = trie.token(level, code)
        out.append(tok)
        last = tok
    items = torch.where(nodes >= 0, trie.node_item[nodes.clamp(min=0)], torch.full_like(nodes, -1))
    return items, torch.stack(out, -1)


INVALID_BEAMS = ("miss", "drop")


def beam_ranks(items: torch.Tensor, target: torch.Tensor, invalid: str = "miss") -> torch.Tensor:
    """0-based rank of the target among the beams (best first); not found = #beams.

    invalid="miss" (the authors' `Evaluator.calculate_pos_index`): a beam that is no item (-1)
    keeps its rank slot and counts as a miss, so the target is ranked at its beam position.
    invalid="drop": invalid beams are removed before ranking (optimistic: a target behind k
    invalid beams moves up k places). Under trie-constrained decoding the only invalid beams are
    dead ones (score -inf, at the end), so both give the same ranks. Beams are distinct code
    tuples and a tuple names at most one item, so no item appears twice among the beams.
    """
    if invalid not in INVALID_BEAMS:
        raise ValueError(f"invalid={invalid!r}; use one of {INVALID_BEAMS}")
    valid = items >= 0
    hit = (items == target.unsqueeze(1)) & valid
    if invalid == "miss":
        before = torch.arange(items.size(1), device=items.device).expand_as(items)
    else:
        before = torch.cumsum(valid.long(), 1) - valid.long()  # valid beams ranked above each position
    miss = torch.full_like(target, items.size(1))
    return torch.where(hit.any(1), (before * hit).sum(1), miss)


class TIGER(SeqRecModule):
    def __init__(
        self,
        num_items: int,
        item_codes: Mapping[int, Sequence[int]] | str,
        max_len: int = 20,
        codebook_size: int | None = None,
        level_offsets: Sequence[int] | None = None,
        d_model: int = 128,
        d_kv: int = 64,
        d_ff: int = 1024,
        num_layers: int = 4,
        num_decoder_layers: int = 4,
        num_heads: int = 6,
        dropout: float = 0.1,
        feed_forward_proj: str = "relu",
        num_beams: int = 20,
        test_num_beams: int | None = None,
        constrained: bool = True,
        invalid_beams: str = "miss",
        user_token: bool | int = False,
        compile: bool = False,
        fast_dropout: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        topk: Sequence[int] = (5, 10),
        **kwargs,
    ):
        super().__init__(num_items=num_items, max_len=max_len, lr=lr, weight_decay=weight_decay, topk=topk,
                         **kwargs)
        # the code tables come from the item tokenizer(s) in the config (`tokenizers`: a subclass's, e.g.
        # MTGRec's); kept out of the hparams, they would be copied into every checkpoint and the logger's
        # hparams.yaml (~90 KB per table on Office)
        self.save_hyperparameters(ignore=["item_codes", "tokenizers"])
        codes = load_item_codes(item_codes)
        missing = [i for i in range(1, num_items + 1) if i not in codes]
        if missing:
            raise ValueError(f"item_codes lacks {len(missing)} of items 1..{num_items}, e.g. {missing[:5]}")
        codes = {i: codes[i] for i in range(1, num_items + 1)}
        self.trie = SemanticIDTrie(codes, codebook_size=codebook_size, level_offsets=level_offsets)
        self.num_levels = self.trie.num_levels
        self.num_beams = num_beams
        self.test_num_beams = test_num_beams or num_beams
        self.constrained = constrained
        if invalid_beams not in INVALID_BEAMS:
            raise UserError(f"model.invalid_beams={invalid_beams!r}; use miss (an invalid beam is a miss in its "
                            f"rank slot, the authors' scoring) or drop (invalid beams removed before ranking)")
        self.invalid_beams = invalid_beams
        if user_token is True or not (user_token in (False, None) or isinstance(user_token, int) and user_token > 0):
            raise UserError(f"model.user_token={user_token!r}; give false or a number of user buckets "
                            f"(TIGER: 2000, MTGRec: 1)")
        # user tokens: `user_buckets` extra vocabulary rows after the code tokens
        self.user_buckets = int(user_token or 0)
        self.user_token_offset = self.trie.vocab_size
        if max(self.topk) > min(self.num_beams, self.test_num_beams):
            raise ValueError(f"topk {self.topk} exceeds the beam size")
        # item id -> its L code tokens (row 0 = padding item -> pad tokens)
        item2tok = torch.full((num_items + 1, self.num_levels), PAD, dtype=torch.long)
        lv = torch.arange(self.num_levels)
        item2tok[1:] = self.trie.token(lv, self.trie.codes)
        self.register_buffer("item2tok", item2tok)
        config = T5Config(
            vocab_size=self.trie.vocab_size + self.user_buckets, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers,
            num_decoder_layers=num_decoder_layers, num_heads=num_heads, dropout_rate=dropout,
            feed_forward_proj=feed_forward_proj, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
            n_positions=max_len * self.num_levels + 1 + (self.user_buckets > 0),
        )
        self.t5 = T5ForConditionalGeneration(config)
        # torch.compile of the training forward (dynamic shapes: batches differ in length); the
        # compiled wrapper is kept out of the module tree so checkpoints keep the plain T5 keys
        self.compile_t5 = compile
        if fast_dropout:  # cheaper dropout masks on a CPU (rucai.models.layers); same semantics
            from rucai.models.layers import use_fast_dropout

            use_fast_dropout(self.t5)

    # -- tokens -------------------------------------------------------------------------------
    def encode_inputs(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded item ids [B, T] -> (code tokens + eos, attention mask), trimmed to the batch max."""
        B = seq.size(0)
        n_tok = lengths * self.num_levels
        width = int(n_tok.max()) + 1
        flat = self.item2tok[seq].view(B, -1)
        ids = torch.cat([flat, flat.new_zeros(B, 1)], 1)[:, :width].clone()
        ids.scatter_(1, n_tok.view(-1, 1), EOS)
        mask = (torch.arange(width, device=seq.device).unsqueeze(0) <= n_tok.unsqueeze(1)).long()
        return ids, mask

    def target_tokens(self, target: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.item2tok[target], target.new_full((len(target), 1), EOS)], 1)

    def add_user_token(self, ids: torch.Tensor, mask: torch.Tensor,
                       user: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """With `user_token` on: the token `offset + user % buckets` prepended (position 0); else unchanged."""
        if not self.user_buckets:
            return ids, mask
        if user is None:
            raise ValueError("model.user_token is on but the batch has no 'user' key (rucai.data.sequential "
                             "batches carry it)")
        tok = (self.user_token_offset + user.to(ids.device) % self.user_buckets).view(-1, 1)
        return torch.cat([tok, ids], 1), torch.cat([mask.new_ones(len(mask), 1), mask], 1)

    def model_inputs(self, batch: Mapping[str, torch.Tensor], **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder input ids and mask of a batch: its code tokens + eos, after the user token if on."""
        return self.add_user_token(*self.encode_inputs(batch["seq"], batch["lengths"], **kw), batch.get("user"))

    # -- training -------------------------------------------------------------------------------
    def train_t5(self):
        """The T5 for training forwards: compiled once when `compile` is set, else the module itself."""
        if not self.compile_t5:
            return self.t5
        fn = self.__dict__.get("_compiled_t5")
        if fn is None:
            fn = self.__dict__["_compiled_t5"] = torch.compile(self.t5, dynamic=True)
        return fn

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, mask = self.model_inputs(batch)
        loss = self.train_t5()(input_ids=ids, attention_mask=mask, labels=self.target_tokens(batch["target"])).loss
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    # -- evaluation -----------------------------------------------------------------------------
    def _trie(self) -> SemanticIDTrie:
        if self.trie.device != self.device:
            self.trie.to(self.device)
        return self.trie

    def decode_prefix(self) -> int:
        """Free tokens generated before the item's codes (0 here; STREAM-Rec's thinking tokens)."""
        return 0

    @torch.no_grad()
    def recommend(self, seq: torch.Tensor, lengths: torch.Tensor, num_beams: int | None = None,
                  constrained: bool | None = None, user: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top items by beam search: (items [B, beam] with -1 for invalid/dead beams, scores)."""
        ids, mask = self.add_user_token(*self.encode_inputs(seq, lengths), user)
        items, _, scores = beam_search(self.t5, self._trie(), ids, mask, num_beams or self.num_beams,
                                       self.constrained if constrained is None else constrained,
                                       free_prefix=self.decode_prefix())
        return items, scores

    def _evaluate(self, batch: dict[str, torch.Tensor], prefix: str) -> None:
        beams = self.test_num_beams if prefix == "test" else self.num_beams
        items, _ = self.recommend(batch["seq"], batch["lengths"], num_beams=beams, user=batch.get("user"))
        ranks = beam_ranks(items, batch["target"], self.invalid_beams)
        bsz = len(ranks)
        for name, values in topk_metrics(ranks, self.topk).items():
            self.log(f"{prefix}/{name}", values.mean(), on_epoch=True, batch_size=bsz, sync_dist=True,
                     prog_bar=name == "ndcg@10")

    def configure_optimizers(self):
        from rucai.runtime.hardware import adam

        return adam(self, self.parameters(), lr=self.lr, weight_decay=self.weight_decay, decoupled=True)


# -- benchmark -------------------------------------------------------------------------------------
def random_codes(num_items: int, levels: int = 3, codebook_size: int = 256, seed: int = 0) -> dict[int, list[int]]:
    """Random `levels`-level codes plus a collision level (0, 1, ... among items sharing a tuple)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, codebook_size, (num_items, levels), generator=g).tolist()
    seen: dict[tuple[int, ...], int] = {}
    out = {}
    for i, c in enumerate(base, start=1):
        t = tuple(c)
        out[i] = [*c, seen.get(t, 0)]
        seen[t] = seen.get(t, 0) + 1
    return out


def bench(num_items: int = 2400, batch_size: int = 256, beams: Sequence[int] = (20, 50), num_users: int = 1024,
          max_len: int = 20, constrained: bool = True, seed: int = 0, device: str = "cpu",
          free_prefix: int = 0) -> dict[int, float]:
    """Users/second of beam search for a random-init 4-layer TIGER on full-length histories
    (`free_prefix`: that many free tokens first, STREAM-Rec's thinking)."""
    torch.manual_seed(seed)
    model = TIGER(num_items=num_items, item_codes=random_codes(num_items, seed=seed), max_len=max_len,
                  codebook_size=256, topk=(5,)).eval().to(device)
    seq = torch.randint(1, num_items + 1, (num_users, max_len), device=device)
    lengths = torch.full((num_users,), max_len, device=device)
    model.decode_prefix = lambda: free_prefix
    out = {}
    for beam in beams:
        model.recommend(seq[:batch_size], lengths[:batch_size], num_beams=beam, constrained=constrained)  # warm-up
        t0 = time.perf_counter()
        for s in range(0, num_users, batch_size):
            model.recommend(seq[s:s + batch_size], lengths[s:s + batch_size], num_beams=beam, constrained=constrained)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[beam] = num_users / (time.perf_counter() - t0)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="TIGER utilities")
    p.add_argument("--bench", action="store_true", help="users/s of constrained beam search on CPU")
    p.add_argument("--num-items", type=int, default=2400)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-users", type=int, default=1024)
    p.add_argument("--beams", type=int, nargs="+", default=[20, 50])
    p.add_argument("--unconstrained", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--free-prefix", type=int, nargs="+", default=[0],
                   help="free tokens before the item (STREAM-Rec's thinking); several: one row each")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    if not a.bench:
        p.print_help()
        return
    print(f"TIGER beam search, {a.num_items} items x 4 levels, d_model 128, 4+4 layers, batch {a.batch_size}, "
          f"{a.device}, {torch.get_num_threads()} threads, {'un' if a.unconstrained else ''}constrained")
    rows = []
    for fp in a.free_prefix:
        res = bench(a.num_items, a.batch_size, a.beams, a.num_users, constrained=not a.unconstrained,
                    device=a.device, free_prefix=fp)
        for beam, ups in res.items():
            rows.append({"free_prefix": fp, "beam": beam, "users_per_s": round(ups, 2)})
            print(f"free prefix {fp}, beam {beam:3d}: {ups:8.1f} users/s")
    if a.json:
        from rucai.utils.io import atomic_write_json

        atomic_write_json(a.json, {"argv": list(argv) if argv is not None else None, "rows": rows,
                                   "threads": torch.get_num_threads(), "device": a.device})


if __name__ == "__main__":
    main()
