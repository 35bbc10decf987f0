"""Short creative writing under constraints, graded by generated criteria and an LLM judge.

There is no reference answer to compare with, so the grading is rubric engineering: for
each prompt a writer model drafts a weighted checklist (`CriteriaRubric`: the stated
constraints, plus what makes the piece good), stored in the run directory and reused on
resume; a judge marks each criterion met or not. The reward is the weighted fraction
met, plus a penalty (`length_penalty`, weight 0.5) from 0 at MAX_WORDS words down to -1
at twice that, so that padding a piece to tick more boxes does not pay.

The judge is any OpenAI-compatible endpoint, named with `judge_model` and
`judge_base_url` (its key from the variable `judge_api_key_var`); the same model writes
the checklists unless `criteria_model` names another. The prompts were written for
lmgym; every fourth one is held out for evaluation.
"""

from __future__ import annotations

from datasets import Dataset

from lmgym import SingleTurnEnv
from lmgym.errors import UsageError
from lmgym.rubrics import CriteriaRubric, JudgeEndpoint, length_penalty

SYSTEM_PROMPT = "You are a careful writer. Follow every constraint of the request exactly. Reply with the piece only."
MAX_WORDS = 150
PROMPTS = (
    "Write a four-line poem about a lighthouse keeper who has never seen the sea. Mention a colour in every line.",
    "Write a 100-word story that begins with the sentence 'The kettle refused to boil.' and ends with a question.",
    "Describe a busy train station at dawn without using the letter 'z' and without naming any city.",
    "Write a haiku (5-7-5 syllables) about the first frost on a vegetable garden.",
    "Write a short dialogue between a retired robot and a pigeon, in which neither ever says the word 'no'.",
    "Write a product description for an umbrella that only works on Tuesdays. Keep it under 80 words and make it persuasive.",
    "Write a limerick about a librarian who is afraid of silence.",
    "Write a diary entry of a tortoise on the day it wins a race. Use exactly three paragraphs.",
    "Write a recipe for 'a calm afternoon' as if it were a real dish, with an ingredients list and numbered steps.",
    "Write a six-sentence story in which each sentence starts with the next letter of the word 'GARDEN'.",
    "Write a letter from a mountain to the river that flows down it, in under 120 words, ending with a promise.",
    "Write a weather forecast for a country where it rains ideas instead of water. Include a temperature and a warning.",
    "Write an acrostic poem on the word 'HARBOUR' about fishing boats returning at night.",
    "Write a 90-word fable featuring a fox and a clock, and state its moral in the final line.",
    "Write the opening paragraph of a mystery set in a bakery, in which the detective is the youngest apprentice.",
    "Write a toast for the wedding of two rival chess players, light-hearted, under 100 words.",
    "Describe the taste of an orange to someone who has never eaten fruit, using at least three comparisons to sounds.",
    "Write a two-stanza poem in which the first stanza is about winter and the second reverses every image into summer.",
    "Write an apology from a cat to a houseplant, in the voice of a formal business letter.",
    "Write a story of exactly five sentences about a map that changes whenever nobody is looking at it.",
    "Write a motivational speech for snails before a long journey across a garden path. Keep it under 100 words.",
    "Write a short scene where two strangers share an umbrella and discover they grew up on the same street. Use no adverbs ending in '-ly'.",
    "Write a museum placard for an ordinary wooden spoon, treating it as a priceless artefact. Include a date and a place of origin.",
    "Write a poem of eight lines about a city bus, where every line ends with a word that rhymes with 'day'.",
    "Write a 100-word story told entirely through three text messages between an astronaut and her grandmother.",
    "Write a packing list for a dragon going on holiday, with a one-line reason for each of at least five items.",
    "Write the first paragraph of a travel guide to the inside of a seashell.",
    "Write a short poem that could be read both top to bottom and bottom to top and still make sense.",
    "Write a bedtime story for a volcano, calm in tone, under 120 words, with a gentle ending.",
    "Write a job advertisement for a cloud shepherd, listing duties, requirements and a salary paid in something other than money.",
    "Write a conversation between the last two leaves on a tree in autumn, in which one of them is optimistic and the other is not.",
    "Write a review of a sunset as if it were a restaurant meal, with a star rating out of five.",
)


def load_environment(
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key_var: str = "OPENAI_API_KEY",
    criteria_model: str | None = None,
    max_criteria: int = 6,
) -> SingleTurnEnv:
    if not judge_model:
        raise UsageError(
            "creative-writing is graded by an LLM judge: name one, e.g. "
            '-a \'{"judge_model": "gpt-4.1-mini", "judge_base_url": "https://api.openai.com/v1"}\''
        )
    judge = JudgeEndpoint(judge_model, base_url=judge_base_url, api_key_var=judge_api_key_var)
    writer = JudgeEndpoint(criteria_model, base_url=judge_base_url, api_key_var=judge_api_key_var) if criteria_model else judge
    rubric = CriteriaRubric(writer, judge, max_criteria=max_criteria, funcs=[length_penalty(2 * MAX_WORDS, soft_start=MAX_WORDS, measure="words")], weights=[0.5])
    rows = [{"question": prompt, "id": i} for i, prompt in enumerate(PROMPTS)]
    return SingleTurnEnv(
        Dataset.from_list([r for r in rows if r["id"] % 4 != 3]),
        Dataset.from_list([r for r in rows if r["id"] % 4 == 3]),
        system_prompt=SYSTEM_PROMPT,
        rubric=rubric,
        sampling_args={"temperature": 0.9, "max_tokens": 400},
    )
