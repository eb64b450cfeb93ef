"""QA metrics (the R1-Searcher authors' normalisation by default, SQuAD's as an option, max over
golds) and the LLM-as-judge on hand-made cases."""

import pytest

from rucai.eval.qa import (
    JUDGE_PROMPT,
    cover_exact_match,
    exact_match,
    f1_score,
    llm_judge,
    normalize_answer,
    parse_judge,
)
from rucai.llm.base import LLM, Completion, RequestOutput


def test_normalize_authors_rules():
    assert normalize_answer("The  Home Rule League!") == "home rule league"
    assert normalize_answer("an_apple, a pear") == "apple pear"
    assert normalize_answer("True") == "yes" and normalize_answer("False") == "no"
    assert normalize_answer("U.S. Route 22") == "u s route 22"  # punctuation becomes a space
    assert normalize_answer("Alzheimer's disease") == "alzheimer s disease"


def test_normalize_squad_rules():
    assert normalize_answer("U.S. Route 22", "squad") == "us route 22"  # punctuation removed
    assert normalize_answer("Alzheimer's disease", "squad") == "alzheimers disease"
    assert normalize_answer(" True ", "squad") == "yes"


def test_authors_and_squad_normalisation_differ_where_the_issue_says():
    """Pinned: the R1-Searcher authors' rule (replace punctuation by a space) against SQuAD's
    (remove it). Their released outputs score the paper's Cover-EM only under their rule."""
    assert cover_exact_match("Alzheimer's disease", "Alzheimer") == 1.0
    assert cover_exact_match("Alzheimer's disease", "Alzheimer", normalization="squad") == 0.0
    assert exact_match("U.S.", "u s") == 1.0 and exact_match("U.S.", "u s", normalization="squad") == 0.0
    assert f1_score("O'Neill", "Neill") == pytest.approx(2 / 3)  # {o, neill} vs {neill}: P 1/2, R 1
    assert f1_score("O'Neill", "Neill", normalization="squad") == 0.0
    from rucai.errors import UserError

    with pytest.raises(UserError, match="valid: r1searcher, squad"):
        normalize_answer("x", "nltk")


def test_exact_match():
    assert exact_match("the Home Rule League", "Home Rule League.") == 1.0
    assert exact_match("Home Rule", "Home Rule League") == 0.0
    assert exact_match("Paris", ["London", "paris"]) == 1.0
    assert exact_match("", "x") == 0.0


def test_f1_hand_computed():
    # pred {home, rule}, gold {home, rule, league}: P = 1, R = 2/3 -> F1 = 0.8
    assert f1_score("Home Rule", "The Home Rule League") == pytest.approx(0.8)
    # pred 4 tokens, 1 shared with a 2-token gold: P = 1/4, R = 1/2 -> 1/3
    assert f1_score("james k polk president", "james madison") == pytest.approx(1 / 3)
    assert f1_score("nothing", "else") == 0.0
    assert f1_score("x", ["y", "x"]) == 1.0  # max over golds
    # yes/no must match exactly (HotpotQA rule)
    assert f1_score("yes it is", "yes") == 0.0
    assert f1_score("no", "no") == 1.0
    assert f1_score("", "") == 0.0  # the authors': no shared token, F1 0


def test_cover_exact_match():
    assert cover_exact_match("It was Kauffman Stadium in Kansas City", "Kauffman Stadium") == 1.0
    assert cover_exact_match("Stadium Kauffman", "Kauffman Stadium") == 1.0  # order ignored
    assert cover_exact_match("Kauffman Field", "Kauffman Stadium") == 0.0
    assert cover_exact_match("anything", "") == 0.0  # an empty gold covers only an empty prediction
    assert cover_exact_match("", "") == 1.0  # (the authors' split(" ") of "" is [""])
    assert cover_exact_match("the league", ["Home Rule League", "league"]) == 1.0


def test_parse_judge():
    assert parse_judge("True") == 1.0
    assert parse_judge("  false.") == 0.0
    assert parse_judge("The answer is True because ...") == 1.0
    assert parse_judge("I cannot tell") == 0.0
    assert parse_judge("untrue") == 0.0


class _Echo(LLM):
    """Answers True when the predicted answer appears in the golden answer line of the prompt."""

    backend = "echo"

    def __init__(self):
        super().__init__(sampling={"temperature": 0.0})
        self.prompts = []

    def _generate(self, prompts, sampling):
        outs = []
        for p in prompts:
            text = p[-1]["content"]
            self.prompts.append(text)
            gold = text.split("Golden Answer: ")[1].split("\n")[0]
            pred = text.split("Predicted Answer: ")[1].split("\n")[0]
            outs.append(RequestOutput(index=-1, prompt_tokens=0,
                                      completions=[Completion(str(pred.lower() in gold.lower()), 1, "stop")]))
        return outs


def test_llm_judge_sends_the_paper_prompt():
    llm = _Echo()
    scores = llm_judge(llm, ["Q1?", "Q2?"], ["Paris", ["Rome", "Roma"]], ["paris", "Milan"])
    assert scores == [1.0, 0.0]
    assert llm.prompts[0] == JUDGE_PROMPT.format(question="Q1?", reference="Paris", prediction="paris")
    assert "Golden Answer: Rome | Roma" in llm.prompts[1]
