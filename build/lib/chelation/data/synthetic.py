"""A small synthetic retrieval collection with deliberately confusable topics.

Topics come in four families (water, health, computing, farming). Every document mixes a
topic's distinctive nouns with nouns shared by its family, nouns shared by all topics, and now
and then a distinctive noun of a sibling topic, so that lexical overlap alone separates topics
only partly. A query names two distinctive words ("key terms") of one document of its topic plus
a family word and a shared word. Judgments: 2 for a same-topic document holding both key terms,
1 for one holding one of them, and an explicit 0 for sibling-topic documents holding a key term.
"""

from __future__ import annotations

import logging

import numpy as np

from chelation.data.dataset import RetrievalDataset, finalise

__all__ = ["SYNTHETIC_VARIANTS", "make_synthetic", "make_synthetic_variant"]

log = logging.getLogger(__name__)

_ADJECTIVES = (
    "new",
    "small",
    "large",
    "early",
    "common",
    "strong",
    "simple",
    "recent",
    "local",
    "general",
    "higher",
    "lower",
    "typical",
    "rapid",
)
_VERBS = (
    "affects",
    "changes",
    "shows",
    "reduces",
    "improves",
    "increases",
    "controls",
    "explains",
    "supports",
    "limits",
    "follows",
    "reveals",
)
_SHARED_NOUNS = (
    "system",
    "method",
    "result",
    "study",
    "model",
    "data",
    "process",
    "effect",
    "level",
    "rate",
    "analysis",
    "change",
    "design",
    "sample",
    "value",
    "pattern",
    "approach",
    "structure",
    "factor",
    "period",
    "region",
    "measure",
    "source",
    "response",
)

# family name -> (family nouns, {topic name: distinctive nouns})
_FAMILIES: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "water": (
        ("water", "flow", "surface", "pressure", "depth", "basin", "current", "sediment"),
        {
            "rivers": ("river", "flood", "levee", "discharge", "tributary", "channel"),
            "oceans": ("ocean", "tide", "salinity", "wave", "coast", "reef"),
            "groundwater": ("aquifer", "well", "recharge", "soil", "infiltration", "borehole"),
            "glaciers": ("glacier", "ice", "meltwater", "moraine", "snowpack", "crevasse"),
        },
    ),
    "health": (
        ("patient", "treatment", "dose", "clinical", "symptom", "therapy", "trial", "risk"),
        {
            "cardiology": ("heart", "artery", "cholesterol", "arrhythmia", "stent", "blood"),
            "oncology": ("tumor", "cancer", "chemotherapy", "biopsy", "metastasis", "radiation"),
            "neurology": ("brain", "neuron", "seizure", "migraine", "stroke", "cortex"),
            "infection": ("virus", "vaccine", "antibiotic", "bacteria", "fever", "immunity"),
        },
    ),
    "computing": (
        ("software", "network", "memory", "algorithm", "server", "code", "user", "latency"),
        {
            "databases": ("query", "index", "transaction", "table", "schema", "join"),
            "security": ("encryption", "password", "firewall", "malware", "attack", "key"),
            "graphics": ("pixel", "shader", "texture", "render", "polygon", "frame"),
            "compilers": ("parser", "token", "grammar", "optimizer", "bytecode", "register"),
        },
    ),
    "farming": (
        ("crop", "yield", "farm", "harvest", "seed", "field", "plant", "season"),
        {
            "irrigation": ("sprinkler", "drip", "canal", "pump", "drought", "reservoir"),
            "livestock": ("cattle", "dairy", "grazing", "feed", "pasture", "herd"),
            "pests": ("insect", "pesticide", "locust", "weed", "fungus", "beetle"),
            "fertilizer": ("nitrogen", "phosphate", "compost", "manure", "potassium", "nutrient"),
        },
    ),
}

# Sentence templates: A adjective, V verb, N noun. Each has 7 or 8 words.
_SENTENCES = (
    "the {A} {N} {V} the {N} of {N}",
    "{A} {N} {V} {N} in the {N}",
    "a {N} of {N} {V} the {A} {N}",
    "this {N} {V} {A} {N} and {N}",
)
_QUERIES = (
    "{A} {K1} {F} and {K2}",
    "how does {K1} affect {K2} {F} {S}",
    "effect of {K1} on {F} {K2}",
    "{S} of {K1} and {K2} under {A} {F}",
)

# how often a document's noun is its topic's, its family's or a sibling topic's (else shared)
DEFAULT_MIX = (0.40, 0.25, 0.07)
_MIN_WORDS, _MAX_WORDS = 15, 40
_LONGEST_SENTENCE = 8


def _topics() -> list[tuple[str, tuple[str, ...], tuple[str, ...], list[tuple[str, ...]]]]:
    """(topic, distinctive nouns, family nouns, sibling topics' nouns), families interleaved."""
    per_family = []
    for family_nouns, topics in _FAMILIES.values():
        entries = []
        for topic, nouns in topics.items():
            siblings = [other for name, other in topics.items() if name != topic]
            entries.append((topic, nouns, family_nouns, siblings))
        per_family.append(entries)
    return [entries[i] for i in range(len(per_family[0])) for entries in per_family]


def _pick(rng: np.random.Generator, words: tuple[str, ...] | list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _fill(rng: np.random.Generator, template: str, slots: dict[str, object]) -> str:
    """Fill `{X}` slots left to right; a slot value is a word pool or a callable drawing one."""
    out = []
    for token in template.split():
        if token.startswith("{") and token.endswith("}"):
            source = slots[token[1:-1]]
            out.append(source(rng) if callable(source) else _pick(rng, source))  # type: ignore[arg-type]
        else:
            out.append(token)
    return " ".join(out)


def _document(
    rng: np.random.Generator,
    nouns: tuple[str, ...],
    family: tuple[str, ...],
    siblings: list[tuple[str, ...]],
    mix: tuple[float, float, float],
) -> str:
    p_topic, p_family, p_sibling = mix

    def noun(r: np.random.Generator) -> str:
        u = r.random()
        if u < p_topic:
            return _pick(r, nouns)
        if u < p_topic + p_family:
            return _pick(r, family)
        if u < p_topic + p_family + p_sibling:
            return _pick(r, siblings[int(r.integers(len(siblings)))])
        return _pick(r, _SHARED_NOUNS)

    slots: dict[str, object] = {"A": _ADJECTIVES, "V": _VERBS, "N": noun}
    target = int(rng.integers(_MIN_WORDS, _MAX_WORDS - _LONGEST_SENTENCE + 2))
    sentences: list[str] = []
    n_words = 0
    while n_words < target:
        sentence = _fill(rng, _pick(rng, _SENTENCES), slots)
        n_words += len(sentence.split())
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
    return " ".join(sentences)


def _words(text: str) -> set[str]:
    return {w.strip(".").lower() for w in text.split()}


def _documents(rng: np.random.Generator, topics: list, docs_per_topic: int,
               mix: tuple[float, float, float]) -> tuple[dict[str, str], dict[str, int]]:
    """The corpus (shuffled, ids d0001...) and each document's topic. Every document holds at
    least two distinct distinctive words of its topic."""
    drafts: list[tuple[int, str]] = []
    for t, (_, nouns, family, siblings) in enumerate(topics):
        for _ in range(docs_per_topic):
            text = _document(rng, nouns, family, siblings, mix)
            while len(_words(text) & set(nouns)) < 2:
                text = _document(rng, nouns, family, siblings, mix)
            drafts.append((t, text))
    order = rng.permutation(len(drafts))
    width = max(4, len(str(len(drafts))))
    corpus: dict[str, str] = {}
    doc_topic: dict[str, int] = {}
    for i, j in enumerate(order, start=1):
        doc_id = f"d{i:0{width}d}"
        doc_topic[doc_id], corpus[doc_id] = drafts[int(j)]
    return corpus, doc_topic


def _queries(rng: np.random.Generator, topics: list, corpus: dict[str, str],
             doc_topic: dict[str, int], queries_per_topic: int
             ) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries, each anchored on one document of its topic so that it has a grade-2 document,
    and their judgments (see the module docstring)."""
    doc_words = {doc_id: _words(text) for doc_id, text in corpus.items()}
    by_topic: list[list[str]] = [[] for _ in topics]
    for doc_id, t in doc_topic.items():
        by_topic[t].append(doc_id)
    sibling_of = {
        t: {s for s in range(len(topics)) if s != t and topics[s][2] is topics[t][2]}
        for t in range(len(topics))
    }
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    q_width = max(3, len(str(len(topics) * queries_per_topic)))
    n = 0
    for t, (_, nouns, family, _) in enumerate(topics):
        for _ in range(queries_per_topic):
            n += 1
            query_id = f"q{n:0{q_width}d}"
            anchor = _pick(rng, by_topic[t])
            candidates = sorted(doc_words[anchor] & set(nouns))
            k1, k2 = (candidates[int(i)] for i in rng.choice(len(candidates), 2, replace=False))
            slots: dict[str, object] = {
                "A": _ADJECTIVES,
                "S": _SHARED_NOUNS,
                "F": family,
                "K1": (k1,),
                "K2": (k2,),
            }
            queries[query_id] = _fill(rng, _pick(rng, _QUERIES), slots)
            judged: dict[str, int] = {}
            for doc_id in corpus:
                hits = len({k1, k2} & doc_words[doc_id])
                if doc_topic[doc_id] == t and hits:
                    judged[doc_id] = hits  # 2 with both key terms, 1 with one
                elif doc_topic[doc_id] in sibling_of[t] and hits:
                    judged[doc_id] = 0
            qrels[query_id] = judged
    return queries, qrels


def make_synthetic(
    seed: int = 0, n_topics: int = 12, docs_per_topic: int = 30, queries_per_topic: int = 6,
    mix: tuple[float, float, float] = DEFAULT_MIX, name: str = "synthetic",
) -> RetrievalDataset:
    """The synthetic collection; the same arguments always give the same dataset. `n_topics` is
    1 to 16 (families are interleaved, so 12 topics cover all four families, three topics each);
    `mix` is how often a document's noun is its topic's, its family's or a sibling topic's."""
    all_topics = _topics()
    if not 1 <= n_topics <= len(all_topics):
        raise ValueError(f"n_topics must be between 1 and {len(all_topics)}, got {n_topics}")
    if docs_per_topic < 1:
        raise ValueError(f"docs_per_topic must be at least 1, got {docs_per_topic}")
    if queries_per_topic < 1:
        raise ValueError(f"queries_per_topic must be at least 1, got {queries_per_topic}")
    rng = np.random.default_rng(seed)
    topics = all_topics[:n_topics]
    corpus, doc_topic = _documents(rng, topics, docs_per_topic, mix)
    queries, qrels = _queries(rng, topics, corpus, doc_topic, queries_per_topic)
    dataset = finalise(name, corpus, queries, qrels)
    log.debug("synthetic dataset (seed %d): %r", seed, dataset)
    return dataset


# Named collections (`dataset.name` with `dataset.kind=synthetic`). `synthetic` is small and easy
# (frozen MiniLM: NDCG@10 0.87, recall@100 1.0); `synthetic_hard` has more topics, more documents
# per topic, and documents that borrow more of their family's and sibling topics' words, so that
# neighbourhoods crowd (frozen MiniLM: NDCG@10 0.67, recall@100 0.90).
SYNTHETIC_VARIANTS: dict[str, dict[str, object]] = {
    "synthetic": {},
    "synthetic_hard": {"n_topics": 16, "docs_per_topic": 60, "queries_per_topic": 8,
                       "mix": (0.20, 0.30, 0.25)},
}


def make_synthetic_variant(name: str, seed: int = 0) -> RetrievalDataset:
    """The named synthetic collection (a key of SYNTHETIC_VARIANTS) for `seed`."""
    if name not in SYNTHETIC_VARIANTS:
        raise ValueError(f"dataset.name={name!r} is not a synthetic collection: expected one of "
                         f"{sorted(SYNTHETIC_VARIANTS)}")
    return make_synthetic(seed, **SYNTHETIC_VARIANTS[name], name=name)
