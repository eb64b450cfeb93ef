"""Every GRSU prompt, in one place (the authors' simulator prompts were never released; these are
written fresh from the paper's description: experiments/grsu/README.md).

  CRS_RECOMMEND     the CRS recommends k movies as "[i]. **Title (year)**" lines
  CRS_REVISE        after a critique: "recommend k items different from the existing ones according
                    to the feedback" (the authors' wording of the revision request)
  SIM_SCORE         the simulated user judges ONE recommended item; the prompt ends with "...)?" so
                    the next token is the user's Yes / No
  SIM_CRITIQUE      the simulated user criticises the list by item attributes (genre, stars,
                    director, writer, plot) without naming the movie it wants
"""

from __future__ import annotations

SYSTEM_CRS = ("You are a movie recommender chatting with a user. Recommend movies the user will like, "
              "based on the conversation.")

CRS_RECOMMEND = ("Here is the conversation so far:\n{dialogue}\n\n"
                 "Recommend {k} movies for the user. Answer with exactly {k} lines, each in the form "
                 "[i]. **Title (year)**, and nothing else.")

CRS_REVISE = ("The user gave this feedback on your recommendations:\n{feedback}\n\n"
              "Recommend {k} items different from the existing ones according to the feedback, in the same "
              "format: exactly {k} lines [i]. **Title (year)**.")

SYSTEM_SIM = ("You are a user looking for a movie recommendation. You know which movies you would enjoy; "
              "answer as that user.")

SIM_SCORE = ("Here is your conversation with a recommender:\n{dialogue}\n\n"
             "The recommender suggests: {item}.\n"
             "Answer Yes or No. Would you accept this recommendation ({item})?")

SIM_CRITIQUE = ("Here is your conversation with a recommender:\n{dialogue}\n\n"
                "The recommender suggests:\n{items}\n\n"
                "None of these is what you want. Explain briefly what is wrong with them in terms of "
                "genre, stars, director, writer or plot, without naming the movie you want.")


def numbered(titles: list[str]) -> str:
    """The CRS answer format: "[1]. **Title (year)**" lines."""
    return "\n".join(f"[{i}]. **{t}**" for i, t in enumerate(titles, 1))
