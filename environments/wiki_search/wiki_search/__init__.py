"""Multi-hop questions about an invented archipelago, answered with `search` and `read` tools.

The corpus (`articles/`, one markdown file per article) describes the Ostrelle
Archipelago, a place written for this project, so no model can answer from memory.
Each question in `questions.jsonl` needs two or three articles, chained: the first
names a person, place or thing whose own article holds the answer, or the next link.
The model searches with a small BM25 built once at load time (a query word in a title
adds its idf once more: BM25 saturates term counts, so repeating title words barely helps),
reads articles or single sections, and answers in `<answer>` tags; the reward is exact
match after normalisation (case, punctuation, articles, spacing, number words, and a
unit after a number). The evidence titles stay in `info`, unseen by the model.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from importlib.resources import files

from lmgym import Rubric, XMLParser
from lmgym.envs import ToolEnv

DATA = files(__name__)
SYSTEM_PROMPT = (
    "You answer questions about the Ostrelle Archipelago, which is described in a small "
    "encyclopedia. You know nothing about it yourself: use the search tool to find articles "
    "and the read tool to read them, and follow the facts from one article to the next "
    "(most questions need two or three articles). When you know the answer, reply with only "
    "the answer inside answer tags, for example: <answer>1783</answer>"
)
INTRODUCTION = "Introduction"
TITLE_WEIGHT, K1, B = 1.0, 1.2, 0.75  # the title bonus (in idf units); the usual BM25 constants
STOPWORDS = set("a an and are as at be by did do does for from how in is it of on or that the to was were what when where which who whom whose why with".split())
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
NUMBERS |= {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}


def normalize(text: str) -> str:
    """Lower case; "1,104" → "1104"; punctuation, articles and extra spaces dropped; number words as digits."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())
    out, after_tens = [], False
    for word in re.sub(r"[^\w\s]|_", " ", text).split():
        value = NUMBERS.get(word)
        if after_tens and value is not None and 0 < value < 10:
            out[-1] = str(int(out[-1]) + value)  # "forty two" → "42"
        elif word not in ("a", "an", "the"):
            out.append(word if value is None else str(value))
        after_tens = value is not None and value >= 20
    return " ".join(out)


def is_correct(given: str | None, answer: str, aliases: Iterable[str] = ()) -> bool:
    """Exact match after `normalize`; a number may be followed by one unit word ("1104 metres")."""
    if given is None:
        return False
    words = normalize(given).split()
    golds = {normalize(a) for a in [answer, *aliases]}
    return " ".join(words) in golds or (len(words) == 2 and words[0] in golds and words[0].isdigit() and words[1].isalpha())


def tokens(text: str) -> list[str]:
    return [t for t in normalize(text).split() if t not in STOPWORDS]


class Corpus:
    """The articles by title, each a dict of sections (the lead is "Introduction"), and a BM25 index."""

    def __init__(self, articles: dict[str, dict[str, str]]):
        self.articles = articles
        self.by_key = {normalize(title): title for title in articles}
        self.docs = {t: Counter(tokens(f"{t} {' '.join(s.values())}")) for t, s in articles.items()}
        self.title_words = {t: set(tokens(t)) for t in articles}
        self.avg_len = sum(sum(d.values()) for d in self.docs.values()) / len(self.docs)
        df = Counter(term for doc in self.docs.values() for term in doc)
        self.idf = {term: math.log(1 + (len(self.docs) - n + 0.5) / (n + 0.5)) for term, n in df.items()}

    @classmethod
    def load(cls) -> Corpus:
        articles = {}
        for path in sorted((p for p in DATA.joinpath("articles").iterdir() if p.name.endswith(".md")), key=lambda p: p.name):
            title, *lines = path.read_text(encoding="utf-8").strip().splitlines()
            sections, name = {INTRODUCTION: []}, INTRODUCTION
            for line in lines:
                if line.startswith("## "):
                    name = line[3:].strip()
                    sections[name] = []
                else:
                    sections[name].append(line)
            articles[title.removeprefix("# ").strip()] = {n: "\n".join(body).strip() for n, body in sections.items()}
        return cls(articles)

    def rank(self, query: str) -> list[tuple[float, str]]:
        """(score, title) of every article sharing a word with the query, best first."""
        terms = set(tokens(query))
        scores = []
        for title, doc in self.docs.items():
            norm = K1 * (1 - B + B * sum(doc.values()) / self.avg_len)
            score = sum(self.idf[t] * doc[t] * (K1 + 1) / (doc[t] + norm) for t in terms if t in doc)
            scores.append((score + TITLE_WEIGHT * sum(self.idf[t] for t in terms & self.title_words[title]), title))
        return sorted((pair for pair in scores if pair[0] > 0), key=lambda pair: (-pair[0], pair[1]))

    def snippet(self, title: str, query: str, width: int = 160) -> str:
        """The sentence of the article that best matches the query, cut to `width` characters."""
        terms = set(tokens(query))
        sentences = re.split(r"(?<=[.!?])\s+", " ".join(self.articles[title].values()).replace("\n", " "))
        best = max(sentences, key=lambda s: sum(self.idf.get(t, 0) for t in terms & set(tokens(s))))
        return best if len(best) <= width else best[: width - 1].rsplit(" ", 1)[0] + "…"

    def search(self, query: str, k: int = 5) -> str:
        if not 1 <= k <= 10:
            raise ValueError(f"k must be between 1 and 10, got {k}")
        hits = self.rank(query)[:k]
        if not hits:
            return f"No article matches {query!r}. Try fewer or different words."
        return "\n".join(f"{i}. {title}: {self.snippet(title, query)}" for i, (_, title) in enumerate(hits, 1))

    def read(self, title: str, section: str | None = None) -> str:
        key = normalize(title)
        if key not in self.by_key:
            close = difflib.get_close_matches(key, list(self.by_key), n=5, cutoff=0.5)
            hint = f"close titles: {', '.join(self.by_key[c] for c in close)}" if close else "use search to find titles"
            raise LookupError(f"no article titled {title!r}; {hint}")
        title = self.by_key[key]
        sections = self.articles[title]
        if section is None:
            return "\n\n".join([f"# {title}", *(body if n == INTRODUCTION else f"## {n}\n{body}" for n, body in sections.items())])
        names = {normalize(n): n for n in sections}
        if normalize(section) not in names:
            raise LookupError(f"{title!r} has no section {section!r}; its sections: {', '.join(sections)}")
        name = names[normalize(section)]
        return f"# {title} / {name}\n\n{sections[name]}"


def make_tools(corpus: Corpus) -> list:
    """The two tools the model sees, as plain functions over `corpus`."""

    def search(query: str, k: int = 5) -> str:
        """Search the encyclopedia; returns the best matching article titles, each with a one-line snippet.

        Args:
            query: keywords, e.g. "tide clock inventor".
            k: how many titles to return, from 1 to 10.
        """
        return corpus.search(query, k)

    def read(title: str, section: str | None = None) -> str:
        """Read an article of the encyclopedia, whole or one section.

        Args:
            title: the article's title, as search shows it.
            section: a section heading of the article (e.g. "History"); leave out for the whole article.
        """
        return corpus.read(title, section)

    return [search, read]


def load_questions() -> list[dict]:
    """Questions as dataset rows, ordered by a hash of their text (a fixed, arbitrary order)."""
    rows = []
    for line in DATA.joinpath("questions.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        info = {"titles": q["titles"], "hops": len(q["titles"]), "aliases": q.get("aliases", [])}
        rows.append({"question": q["question"], "answer": q["answer"], "info": info})
    return sorted(rows, key=lambda row: hashlib.sha256(row["question"].encode()).hexdigest())


def correct_answer(completion, answer: str, info: dict, parser) -> float:
    """1.0 when the answer tag matches the answer (or an alias) after normalisation."""
    return 1.0 if is_correct(parser.parse_answer(completion), answer, info.get("aliases", [])) else 0.0


def load_environment(num_eval_examples: int = 20, max_turns: int = 8) -> ToolEnv:
    """The first `num_eval_examples` questions in hash order are the eval split, the rest train."""
    rows = load_questions()
    if not 0 <= num_eval_examples < len(rows):
        raise ValueError(f"num_eval_examples must be between 0 and {len(rows) - 1}, got {num_eval_examples}")
    parser = XMLParser(["answer"])
    rubric = Rubric([correct_answer, parser.get_format_reward_func()], weights=[1.0, 0.2], parser=parser)
    return ToolEnv(
        rows[num_eval_examples:],
        rows[:num_eval_examples] or None,
        tools=make_tools(Corpus.load()),
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 512},
    )
