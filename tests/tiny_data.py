"""A tiny, synthetic, format-faithful copy of what the experiments read under `paths.data_dir`.

`write_tiny_data(root)` writes, deterministically and in well under a second:

  amazon18_office/   LC-Rec/TIGER JSON: 80 users x 5-12 items over 130 items with title/description/brand,
                     plus item_index.json / user_index.json
  ml-100k/           RecBole atomic files (.inter/.item/.user with `name:type` headers): 50 users, 60 items
  olymmath/          OlymMATH-{EN,ZH}-{EASY,HARD}.jsonl: 4 index-aligned problems each (LaTeX answers)
  math/              math500, math_test, aime24, aime25, amc23, gsm8k_test, hmmt_feb_2025 (each with its
                     real gold format: plain, float, `#### n`, `\\boxed{}` in the solution)
  multihop_qa/       hotpotqa_500, 2wiki_500, musique_500, bamboogle (idx, question, answer); R1-Searcher
                     stage-1/stage-2 training questions; HotpotQA-with-contexts (IRCoT format, the BM25
                     pool); a KILT sample
  r1_aime23_traces/  3 `<think> ... </think>` traces with gold answers
  redial/            zero-shot-CRS ReDial: 24 invented films (DBpedia-style URIs), 16 dialogs x 2 system
                     turns (test.jsonl, item_ids.json, entity2id.json); GRSU

The text is synthetic (invented entities, arithmetic problems); sizes are the minimum the smoke runs
need (EASY-EP's specialise smoke takes 118+ texts per domain: math_test, stage-2 questions, Office
items). It checks wiring and formats, never numbers: tests that need the real sets use `needs_data`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# the folders write_tiny_data creates (what the experiments read)
FOLDERS = ("amazon18_office", "ml-100k", "olymmath", "math", "multihop_qa", "r1_aime23_traces", "redial")

_ADJ = ["Compact", "Heavy-Duty", "Ergonomic", "Recycled", "Premium", "Classic", "Portable", "Colorful",
        "Quiet", "Smart"]
_NOUN = ["Stapler", "Notebook", "Desk Organizer", "Ballpoint Pen", "Label Maker", "Paper Shredder",
         "File Folder", "Calculator", "Whiteboard", "Tape Dispenser", "Binder", "Envelope Pack", "Desk Lamp"]
_BRAND = ["Acme", "Officio", "Penwright", "Deskly", "Papyra", "Northmark"]
_PLACES = ["Tallin Cove", "Marrow Bay", "Eastfold", "Quillby", "Brannock", "Veyra", "Osterholm", "Kelmsey"]
_PEOPLE = ["Mira Kell", "Odo Brandt", "Lysa Varn", "Teodor Quade", "Ines Molloy", "Kasimir Holt",
           "Wren Adair", "Petra Sand"]
_THINGS = ["Zorvath Bridge", "the Amberline Railway", "Harrow Abbey", "the Lumen Prize", "Cindral Lighthouse",
           "the Vessa Canal", "Ordwick Library", "the Saltmere Festival"]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4, ensure_ascii=False), encoding="utf-8")


# ---------------------------------------------------------------------------------- recommendation


def _sequences(rng: random.Random, n_users: int, n_items: int, lo: int, hi: int) -> list[list[int]]:
    """Chronological item sequences with learnable transitions (each item has 3 likely successors)."""
    succ = {i: rng.sample(range(n_items), 3) for i in range(n_items)}
    out = []
    for _ in range(n_users):
        seq = [rng.randrange(n_items)]
        while len(seq) < rng.randint(lo, hi):
            nxt = rng.choice(succ[seq[-1]]) if rng.random() < 0.8 else rng.randrange(n_items)
            if nxt not in seq:
                seq.append(nxt)
        out.append(seq)
    return out


def _amazon18_office(d: Path, rng: random.Random, n_users: int = 80, n_items: int = 130) -> None:
    items = {}
    for i in range(n_items):
        adj, noun, brand = _ADJ[i % len(_ADJ)], _NOUN[(i // len(_ADJ)) % len(_NOUN)], _BRAND[i % len(_BRAND)]
        items[str(i)] = {
            "title": f"{brand} {adj} {noun} Model {100 + i}",
            "description": f"A {adj.lower()} {noun.lower()} for home and office use. Size {1 + i % 5}, "
                           f"pack of {1 + i % 3}, colour code {rng.randrange(1000):03d}.",
            "brand": brand,
        }
    seqs = _sequences(rng, n_users, n_items, 5, 12)
    _json(d / "Office_Products.inter.json", {str(u): s for u, s in enumerate(seqs)})
    _json(d / "Office_Products.item.json", items)
    _json(d / "item_index.json", {f"B{i:09d}": i for i in range(n_items)})
    _json(d / "user_index.json", {f"A{u:012d}": u for u in range(n_users)})


def _ml100k(d: Path, rng: random.Random, n_users: int = 50, n_items: int = 60) -> None:
    d.mkdir(parents=True, exist_ok=True)
    rows, t = [], 880000000
    for u, seq in enumerate(_sequences(rng, n_users, n_items, 5, 10), start=1):
        for i in seq:
            t += rng.randint(1, 5000)
            rows.append(f"{u}\t{i + 1}\t{rng.randint(1, 5)}\t{t}")
    rng.shuffle(rows)  # the real file is not grouped by user; the loader sorts by timestamp
    (d / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                     + "\n".join(rows) + "\n")
    genres = ["Comedy", "Drama", "Action Adventure", "Animation Children's", "Thriller"]
    (d / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                    + "".join(f"{i}\tThe {_ADJ[i % 10]} {_NOUN[i % 13]}\t{1960 + i % 40}\t"
                                              f"{genres[i % 5]}\n" for i in range(1, n_items + 1)))
    (d / "ml-100k.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                                    + "".join(f"{u}\t{18 + u % 50}\t{'MF'[u % 2]}\tother\t{10000 + u}\n"
                                              for u in range(1, n_users + 1)))


# ---------------------------------------------------------------------------------- math

_OLYM = [  # (subject EN, subject ZH, problem EN, problem ZH, answer): answers are LaTeX, not all integers
    ("Algebra", "代数", "Find the minimum of $x^2 - 4x + 7$ over the reals.", "求 $x^2 - 4x + 7$ 在实数上的最小值。", "3"),
    ("Geometry", "几何", "A square has diagonal $2$. Find its side length.", "正方形的对角线长为 $2$，求其边长。", r"\sqrt{2}"),
    ("Number Theory", "数论", "Find the remainder when $2^{10}$ is divided by $7$.", "求 $2^{10}$ 除以 $7$ 的余数。", "2"),
    ("Combinatorics", "组合", "A fair coin is tossed twice. Find the probability of exactly one head.",
     "公平硬币抛两次，求恰好一次正面的概率。", r"\frac{1}{2}"),
]


def _olymmath(d: Path) -> None:
    for tier in ("EASY", "HARD"):
        for lang in ("EN", "ZH"):
            rows = []
            for i, (sen, szh, pen, pzh, ans) in enumerate(_OLYM):
                k = i + (1 if tier == "HARD" else 0)  # HARD gets a different answer for the same problem
                a = ans if tier == "EASY" else (f"{int(ans) + k}" if ans.isdigit() else f"[0, {ans}]")
                rows.append({"problem": pen if lang == "EN" else pzh, "answer": a,
                             "subject": sen if lang == "EN" else szh, "unique_id": f"OlymMATH-{tier}-{i}-{lang}"})
            _jsonl(d / f"OlymMATH-{lang}-{tier}.jsonl", rows)


def _arith(rng: random.Random, i: int) -> tuple[str, str, int]:
    a, b, c = rng.randint(2, 60), rng.randint(2, 60), rng.randint(2, 9)
    ans = (a + b) * c
    problem = f"Compute $({a} + {b}) \\times {c}$ and give the result as an integer."
    solution = (f"First add: ${a} + {b} = {a + b}$. Then multiply: ${a + b} \\times {c} = {ans}$. "
                f"So the answer is $\\boxed{{{ans}}}$.")
    return problem, solution, ans


def _math(d: Path, rng: random.Random) -> None:
    subjects = ["Algebra", "Prealgebra", "Number Theory", "Counting & Probability", "Geometry"]
    rows = []
    for i in range(130):
        p, s, _ = _arith(rng, i)
        rows.append({"problem": p, "level": f"Level {1 + i % 5}", "type": subjects[i % 5], "solution": s, "idx": i})
    _jsonl(d / "math_test.jsonl", rows)
    m500 = []
    for i in range(30):
        p, s, a = _arith(rng, i)
        m500.append({"problem": p, "solution": s, "answer": str(a), "subject": subjects[i % 5],
                     "level": 1 + i % 5, "unique_id": f"test/{subjects[i % 5].lower().replace(' ', '_')}/{i}.json"})
    m500[0] |= {"answer": r"\frac{1}{2}", "solution": r"Half of one is $\boxed{\frac{1}{2}}$."}
    _jsonl(d / "math500.jsonl", m500)
    aime24, aime25, amc23, hmmt, gsm = [], [], [], [], []
    for i in range(4):
        p, s, a = _arith(rng, i)
        aime24.append({"id": 60 + i, "problem": p, "solution": s, "answer": str(a), "url": ""})
        aime25.append({"answer": str(a), "problem": p})
        amc23.append({"id": i, "problem": p, "answer": float(a), "url": "", "question": p})
        hmmt.append({"problem": p, "solution": f"\\boxed{{{a}}}"})
        x, y = rng.randint(5, 30), rng.randint(1, 4)
        gsm.append({"question": f"Ana has {x} pens and buys {y} more boxes of 10 pens. How many pens does she have?",
                    "answer": f"She buys {y} * 10 = <<{y}*10={10 * y}>>{10 * y} pens.\n"
                              f"She has {x} + {10 * y} = <<{x}+{10 * y}={x + 10 * y}>>{x + 10 * y} pens.\n"
                              f"#### {x + 10 * y}", "idx": i})
    _jsonl(d / "aime24.jsonl", aime24)
    _jsonl(d / "aime25.jsonl", aime25)
    _jsonl(d / "amc23.jsonl", amc23)
    _jsonl(d / "hmmt_feb_2025.jsonl", hmmt)
    _jsonl(d / "gsm8k_test.jsonl", gsm)


def _r1_traces(d: Path, rng: random.Random) -> None:
    rows = []
    for i in range(3):
        p, s, a = _arith(rng, i)
        resp = f"<think>\nOkay, let me compute this step by step. {s}\nLet me double-check... yes.\n</think>\n\n{s}"
        rows.append({"idx": i, "problem": p, "answer": str(a), "response": resp, "num_tokens": len(resp.split()) * 2})
    _jsonl(d / "aime23_r1_traces.jsonl", rows)


# ---------------------------------------------------------------------------------- multi-hop QA


def _facts(i: int) -> tuple[str, str, str]:
    return _THINGS[i % len(_THINGS)], _PEOPLE[(3 * i + 1) % len(_PEOPLE)], _PLACES[(5 * i + 2) % len(_PLACES)]


def _question(i: int) -> tuple[str, str]:
    thing, person, place = _facts(i)
    if i % 2:
        return f"Where was the founder of {thing} born?", place
    return f"Who founded {thing}, the landmark near {place}?", person


def _multihop(d: Path, rng: random.Random) -> None:
    for name, n in (("hotpotqa_500", 4), ("2wiki_500", 4), ("musique_500", 4), ("bamboogle", 4)):
        _jsonl(d / f"{name}.jsonl", [{"idx": k + 1, "question": q, "answer": a, "gen_text_store": ""}
                                     for k, (q, a) in enumerate(_question(k + 3 * len(name)) for k in range(n))])
    s1 = []
    for k in range(16):
        q, a = _question(k)
        s1.append({"idx": 1000 + k, "question": q, "answer": a, "pred_anses": ["", f" {a} ", f" maybe {a} "]})
    _jsonl(d / "r1searcher_stage1_train.jsonl", s1)
    s2 = []
    for k in range(130):
        q, a = _question(k)
        s2.append({"idx": k + 1, "question": f"{q} (record {k})", "answer": a, "gen_text_store": ""})
    _jsonl(d / "r1searcher_stage2_train.jsonl", s2)
    ctx_rows, kilt = [], []
    for k in range(8):
        thing, person, place = _facts(k)
        q, a = _question(k)
        paras = [
            (thing, f"{thing} is a landmark near {place}. It was founded in {1800 + 7 * k} by {person}.", True),
            (person, f"{person} was born in {place} and later worked as an engineer and writer.", True),
            (_THINGS[(k + 3) % 8], f"{_THINGS[(k + 3) % 8]} is unrelated to this question; it hosts a market.", False),
            (_PLACES[(k + 5) % 8], f"{_PLACES[(k + 5) % 8]} is a small town with {rng.randint(2, 90)} thousand people.",
             False),
        ]
        ctx_rows.append({
            "question_id": f"5a8c{k:020x}", "question_text": q,
            "answers_objects": [{"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": [a]}],
            "contexts": [{"id": str(j), "title": t, "paragraph_text": p, "is_supporting": sup}
                         for j, (t, p, sup) in enumerate(paras)],
        })
        kilt.append({"wikipedia_title": thing, "text": [f"{thing}\n", paras[0][1] + "\n", paras[1][1] + "\n"]})
    _jsonl(d / "hotpotqa_dev500_with_contexts.jsonl", ctx_rows)
    _jsonl(d / "filtered_kilt_sample_100.jsonl", kilt)


_FILM_WORDS = ["Midnight", "River", "Glass", "Falcon", "Winter", "Harbor", "Echo", "Crimson", "Silent", "Orchard",
               "Lantern", "Summit"]


def _redial(d: Path, rng: random.Random, n_films: int = 24, n_dialogs: int = 16) -> None:
    films = {}
    for i in range(n_films):
        title = f"{_FILM_WORDS[i % 12]} {_FILM_WORDS[(i * 5 + 3) % 12]}"
        films[100 + i] = (title, 1970 + (i * 7) % 50)
    entity2id = {f"<http://dbpedia.org/resource/{t.replace(' ', '_')}_({y}_film)>": i for i, (t, y) in films.items()}
    entity2id["<http://dbpedia.org/resource/Comedy>"] = 7  # a non-film entity, not in the catalogue
    name = {i: f"{t} ({y})" for i, (t, y) in films.items()}
    rows, turn = [], 1000
    for g in range(n_dialogs):
        a, b, c = rng.sample(sorted(films), 3)
        u1 = f"Hi! I liked {name[a]}, anything like it?"
        s1 = f"You might enjoy {name[b]}"
        u2 = "I have seen it. Something funnier?"
        for ctx, resp, rec, prev in ((["", u1], s1, [b], [a]), (["", u1, s1, u2], f"Then try {name[c]}", [c], [a, b, 7])):
            roles = ["User", "System"] * 2
            text = "".join(f"\n{roles[k]}: {u}" for k, u in enumerate(ctx[1:]))
            rows.append({"context": ctx, "resp": resp, "rec": rec, "entity": rec, "prev_entity": prev,
                         "dialog_id": f"test_{g}", "turn_id": turn, "is_user": 0,
                         "entity_name": [name[i] for i in rec], "input": text + "\nSystem: "})
            turn += 1
    _jsonl(d / "test.jsonl", rows)
    _json(d / "item_ids.json", sorted(films))
    _json(d / "entity2id.json", entity2id)


def write_tiny_data(root: Path) -> Path:
    """Write the tiny data set under `root` (created if needed) and return `root`."""
    root = Path(root)
    rng = random.Random(0)
    _amazon18_office(root / "amazon18_office", rng)
    _ml100k(root / "ml-100k", rng)
    _olymmath(root / "olymmath")
    _math(root / "math", rng)
    _multihop(root / "multihop_qa", rng)
    _r1_traces(root / "r1_aime23_traces", rng)
    _redial(root / "redial", rng)
    return root


if __name__ == "__main__":  # python tests/tiny_data.py <dir>: inspect or reuse the tiny set
    import sys

    print(write_tiny_data(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_data")))
