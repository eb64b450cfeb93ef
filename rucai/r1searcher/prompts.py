"""Tags and prompts, as in the authors' code (evaluation `prompt_type v0` for base models, the
Llama-3.1-8B-Instruct system prompt for chat models)."""

from __future__ import annotations

from typing import Any

BEGIN_QUERY, END_QUERY = "<|begin_of_query|>", "<|end_of_query|>"
BEGIN_DOCS, END_DOCS = "<|begin_of_documents|>", "<|end_of_documents|>"
BEGIN_THINK, END_THINK = "<think>", "</think>"
BEGIN_ANSWER, END_ANSWER = "<answer>", "</answer>"

BASE_PROMPT = (
    "The User asks a question, and the Assistant solves it.\n"
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
    "final answer.\n"
    "The output format of reasoning process and final answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., \"<think> reasoning process here </think>\\n\\n<answer> final "
    "answer here </answer>\".\n"
    "During the thinking process, the Assistant can perform searching for uncertain knowledge if necessary "
    "with the format of \"<|begin_of_query|> search query (only keywords) here <|end_of_query|>\". **A query "
    "must involve only a single triple**.\n"
    "Then, the system will provide the Assistant with helpful information with the format of "
    "\"<|begin_of_documents|> ...search results... <|end_of_documents|>\".\n\n"
    "User:{question}\nAssistant: <think>"
)

CHAT_SYSTEM_PROMPT = (
    "You are a helpful assistant.\n"
    "Given a question, you should answer it by first thinking about the reasoning process in the mind and then "
    "providing the final answer.\n"
    "The output format of reasoning process and final answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., \"<think> reasoning process here </think>\\n\\n<answer> final answer "
    "here </answer>\".\n"
    "During the thinking process, **you can perform searching for uncertain knowledge** if necessary with the "
    "format of \"<|begin_of_query|> search query (only list keywords, such as **\"keyword_1 keyword_2 ...\"**)"
    "<|end_of_query|>\". **A query must involve only a single triple**.\n"
    "Then, the search system will provide you with the retrieval information with the format of "
    "\"<|begin_of_documents|> ...search results... <|end_of_documents|>\"."
)

# `chat_demo`: the chat prompt after one worked example (a user turn and the assistant's reply).
# Not in the paper (its 7-8B models follow the instructions alone); a 135M model never writes a
# query tag from the instructions alone (0 of 32 samples, experiments/r1searcher/README.md), so RL
# has no reward variance to learn from.
CHAT_DEMO = (
    "Which city is the birthplace of the director of the film Jaws?",
    "<think> I need the director of Jaws first. <|begin_of_query|> Jaws film director <|end_of_query|>\n\n"
    "<|begin_of_documents|>\n(1)Jaws is a 1975 film directed by Steven Spielberg.\n<|end_of_documents|>\n\n"
    "Now his birthplace. <|begin_of_query|> Steven Spielberg birthplace <|end_of_query|>\n\n"
    "<|begin_of_documents|>\n(1)Steven Spielberg was born in Cincinnati, Ohio.\n<|end_of_documents|>\n\n"
    "The director was born in Cincinnati. </think>\n\n<answer> Cincinnati </answer>",
)

# baselines (no search tags): standard RAG and naive generation
ANSWER_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question with a short phrase (a few words), enclosed in "
    "<answer> </answer> tags, e.g. \"<answer> Paris </answer>\"."
)
RAG_USER_PROMPT = "Documents:\n{documents}\nQuestion: {question}"
BASE_ANSWER_PROMPT = (
    "Answer the question with a short phrase, enclosed in <answer> </answer> tags.\n\n"
    "{context}Question: {question}\nAnswer: <answer>"
)


PROMPT_STYLES = ("base", "chat", "chat_demo")


def search_prompt(question: str, style: str = "chat", tokenizer: Any = None) -> str:
    """The rollout prompt as raw text. Every style ends in `<think>` (the authors append it after the
    chat template too), so a well-formed response holds `</think>` but no `<think>`."""
    if style == "base":
        return BASE_PROMPT.format(question=question)
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r}: use one of {', '.join(PROMPT_STYLES)}")
    msgs = [{"role": "system", "content": CHAT_SYSTEM_PROMPT}]
    if style == "chat_demo":  # the worked example as an earlier turn of the conversation
        msgs += [{"role": "user", "content": CHAT_DEMO[0]}, {"role": "assistant", "content": CHAT_DEMO[1]}]
    msgs.append({"role": "user", "content": question})
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + BEGIN_THINK


def answer_prompt(question: str, documents: str | None, style: str = "chat", tokenizer: Any = None) -> str:
    """Standard RAG (`documents` given) or naive generation (`documents=None`)."""
    if style == "base":
        ctx = f"Documents:\n{documents}\n" if documents else ""
        return BASE_ANSWER_PROMPT.format(context=ctx, question=question)
    user = RAG_USER_PROMPT.format(documents=documents, question=question) if documents else f"Question: {question}"
    msgs = [{"role": "system", "content": ANSWER_SYSTEM_PROMPT}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def extract_answer(text: str) -> str | None:
    """Content of the last `<answer>...</answer>` (None when there is no complete answer tag)."""
    if BEGIN_ANSWER not in text:
        return None
    tail = text.split(BEGIN_ANSWER)[-1]
    if END_ANSWER not in tail:
        return None
    return tail.split(END_ANSWER)[0].strip()
