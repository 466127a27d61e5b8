"""``nlp`` family (instruction-mixing type P): NLP downstream tasks with short targets.

Sub-tasks: ``sentiment`` (positive/negative reviews), ``topic`` (sentence topic from a listed label
set), ``yesno`` (a question about a short passage of facts), ``extract`` (pull a city, name or day
out of a sentence) and ``count`` (how many words of a category a list holds). The reference
response is the short answer only. ``meta`` holds ``answer``, ``subtask`` and, for
classification sub-tasks, ``choices`` (the label set, for log-likelihood multiple choice).
The ``ood`` split uses other phrasings, longer passages, other label words, unseen topics,
fields and categories. ``verify`` is a normalised exact match.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

from tunelab.data.tasks.base import TASK_FAMILIES, TaskFamily

Item = tuple[str, str, dict[str, Any]]

NAMES = ("Anna", "Tom", "Maria", "Omar", "Lena", "Raj", "Sofia", "Ben", "Yuki", "Carlos", "Emma",
         "Ivan", "Nora", "Leo", "Aisha", "Paul", "Mei", "Hugo", "Zara", "Sam")  # fmt: skip
CITIES = ("Paris", "Rome", "Berlin", "Madrid", "Tokyo", "Cairo", "Lima", "Oslo", "Vienna", "Dublin",
          "Prague", "Boston", "Sydney", "Toronto", "Lisbon", "Athens")  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "March", "April", "June", "July", "August", "October", "December")
JOBS = ("teacher", "doctor", "baker", "pilot", "nurse", "painter", "farmer", "chef")
PETS = ("dog", "cat", "parrot", "rabbit", "hamster", "turtle")

# -- sentiment ---------------------------------------------------------------------------
REVIEW_NOUNS = ("movie", "meal", "hotel room", "phone", "concert", "book", "service", "coffee",
                "game", "trip", "lecture", "show", "pizza", "flight", "museum visit")  # fmt: skip
POSITIVE = ("wonderful", "great", "excellent", "delightful", "fantastic", "amazing", "lovely", "superb")
NEGATIVE = ("terrible", "awful", "boring", "disappointing", "dreadful", "poor", "bad", "horrible")
INTENSIFIERS = ("", "really ", "truly ", "rather ", "very ")
REVIEW_TEMPLATES = ("The {noun} was {adv}{adj}.", "What a {adv}{adj} {noun}!", "I found the {noun} {adv}{adj}.",
                    "Honestly, the {noun} was {adv}{adj}.", "My {noun} today was {adv}{adj}.")  # fmt: skip
EXTRA_POS = ("I would happily go again.", "Everyone around me was smiling.", "It was worth every penny.")
EXTRA_NEG = ("I want my money back.", "I will never go again.", "It was a waste of time.")
NEUTRAL = ("We arrived at noon.", "It lasted about two hours.", "My sister came along.")
SENT_PROMPTS = ("Is the sentiment of this review positive or negative?\nReview: {s}",
                "Review: {s}\nSentiment (positive or negative):",
                'Classify the sentiment of "{s}" as positive or negative.')  # fmt: skip
# ood label words, each with its own question: (positive label, negative label, prompt)
SENT_OOD = (("good", "bad", "{s}\nWas the experience good or bad? Answer with one word."),
            ("liked", "disliked", "Did the writer like it? Answer liked or disliked.\n{s}"),
            ("happy", "unhappy", "Read the review and say whether the customer was happy or unhappy.\n{s}"))  # fmt: skip

# -- topic -------------------------------------------------------------------------------
# topic -> (verbs, objects); a sentence is "{name} {verb} the {object} {when}."
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sports": (("watched", "won", "trained for", "cheered at"),
               ("football match", "tennis final", "race", "marathon", "basketball game", "swim meet")),
    "food": (("cooked", "tasted", "baked", "ordered"),
             ("pasta", "soup", "chocolate cake", "curry", "fresh bread", "salad")),
    "technology": (("installed", "repaired", "upgraded", "tested"),
                   ("laptop", "new app", "smartphone", "router", "software update", "robot")),
    "weather": (("got caught in", "was surprised by", "waited out", "complained about"),
                ("heavy rain", "snowstorm", "thunderstorm", "heatwave", "thick fog", "strong wind")),
    "music": (("played", "listened to", "recorded", "practised"),
              ("guitar solo", "new album", "piano piece", "jazz song", "violin part", "symphony")),
}  # fmt: skip
OOD_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "health": (("recovered from", "booked a check-up for", "was treated for"), ("flu", "back pain", "fever")),
    "travel": (("packed for", "booked", "planned"), ("beach holiday", "train journey", "road trip")),
    "finance": (("paid off", "checked", "saved for"), ("loan", "bank account", "pension")),
}  # fmt: skip
WHEN = ("yesterday", "on Monday", "last night", "this morning", "at the weekend", "today")
TOPIC_PROMPTS = ("Classify the topic of this sentence as one of: {labels}.\nSentence: {s}",
                 "Sentence: {s}\nTopic ({labels}):",
                 'Which topic is "{s}" about? Choose from {labels}.')  # fmt: skip
TOPIC_OOD_PROMPTS = ("Pick the category that best fits the text below ({labels}).\n{s}",
                     "News item: {s}\nSection of the newspaper ({labels})?")  # fmt: skip

# -- extraction --------------------------------------------------------------------------
EXTRACT_SENTENCES = ("{name} flew to {city} on {day}.", "On {day}, {name} visited {city}.",
                     "{name} met a friend in {city} last {day}.", "Last {day} {name} took a train to {city}.")  # fmt: skip
EXTRACT_QUESTIONS = {
    "city": ('What is the name of the city in: "{s}"', "Which city is mentioned in this sentence? {s}"),
    "name": ('Who is the person in: "{s}"', "Extract the person's name from this sentence: {s}"),
    "day": ('Which day of the week is mentioned in: "{s}"', "On which day did it happen? {s}"),
}  # fmt: skip
OOD_EXTRACT = ("{name} moved from {city2} to {city} in {month} and started work on a {day}.",
               "In {month}, {name} left {city2}; by {day} the family had settled in {city}.")  # fmt: skip
OOD_EXTRACT_QUESTIONS = {
    "city": "{s}\nTo which city did {name} move?",
    "month": "{s}\nIn which month did it happen?",
    "name": "{s}\nWhat is the person called?",
}

# -- counting ----------------------------------------------------------------------------
CATEGORIES = {
    "animals": ("dog", "cat", "horse", "tiger", "rabbit", "eagle", "sheep", "fox"),
    "fruits": ("apple", "banana", "cherry", "mango", "pear", "grape", "lemon", "plum"),
    "colors": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
}
OOD_CATEGORIES = {
    "vehicles": ("car", "bus", "bicycle", "truck", "train", "boat", "tram", "scooter"),
    "instruments": ("piano", "violin", "drum", "flute", "guitar", "trumpet", "harp", "cello"),
}
FILLER = ("chair", "lamp", "pencil", "window", "cloud", "spoon", "book", "shoe", "river", "door", "stone", "cup")
COUNT_PROMPTS = ("How many {cat} are in this list: {items}? Answer with a number.",
                 "Count the {cat} among these words: {items}.",
                 "Words: {items}\nNumber of {cat}:")  # fmt: skip
COUNT_OOD_PROMPTS = ("Here is a jumble of words: {items}. How many of them are {cat}?",)

NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}  # fmt: skip


def _sentiment(rng: random.Random, ood: bool) -> Item:
    label = rng.choice(["positive", "negative"])
    adj = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
    review = rng.choice(REVIEW_TEMPLATES).format(noun=rng.choice(REVIEW_NOUNS), adv=rng.choice(INTENSIFIERS), adj=adj)
    review = review[0].upper() + review[1:]
    if not ood:
        labels = ["positive", "negative"]
        prompt = rng.choice(SENT_PROMPTS).format(s=review)
        return prompt, label, {"answer": label, "choices": labels}
    pos, neg, template = rng.choice(SENT_OOD)
    extra = rng.choice(EXTRA_POS if label == "positive" else EXTRA_NEG)
    parts = [review, extra, rng.choice(NEUTRAL)]
    rng.shuffle(parts)
    answer = pos if label == "positive" else neg
    prompt = template.format(s=" ".join(parts))
    return prompt, answer, {"answer": answer, "choices": [pos, neg]}


def _topic_sentence(rng: random.Random, bank: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    verbs, objects = bank
    return f"{rng.choice(NAMES)} {rng.choice(verbs)} the {rng.choice(objects)} {rng.choice(WHEN)}."


def _topic(rng: random.Random, ood: bool) -> Item:
    if not ood:
        labels = list(TOPICS)
        rng.shuffle(labels)
        label = rng.choice(labels)
        sentence = _topic_sentence(rng, TOPICS[label])
        prompt = rng.choice(TOPIC_PROMPTS).format(labels=", ".join(labels), s=sentence)
        return prompt, label, {"answer": label, "choices": labels}
    label = rng.choice(list(OOD_TOPICS))
    labels = [label, *rng.sample(list(TOPICS) + [t for t in OOD_TOPICS if t != label], 3)]
    rng.shuffle(labels)
    banks = {**TOPICS, **OOD_TOPICS}
    sentence = _topic_sentence(rng, banks[label])
    prompt = rng.choice(TOPIC_OOD_PROMPTS + TOPIC_PROMPTS).format(labels=", ".join(labels), s=sentence)
    return prompt, label, {"answer": label, "choices": labels}


def _fact(rng: random.Random, name: str) -> tuple[str, str, str]:
    """A fact about ``name``: (statement, relation, value)."""
    rel = rng.choice(["city", "job", "pet"])
    value = rng.choice({"city": CITIES, "job": JOBS, "pet": PETS}[rel])
    text = {"city": "{n} lives in {v}.", "job": "{n} works as a {v}.", "pet": "{n} has a {v}."}[rel]
    return text.format(n=name, v=value), rel, value


def _question(name: str, rel: str, value: str, ood: bool) -> str:
    if rel == "city":
        return f"Is it true that {name} lives in {value}?" if ood else f"Does {name} live in {value}?"
    if rel == "job":
        return f"Is it true that {name} works as a {value}?" if ood else f"Is {name} a {value}?"
    return f"Is it true that {name} owns a {value}?" if ood else f"Does {name} have a {value}?"


def _yesno(rng: random.Random, ood: bool) -> Item:
    people = rng.sample(NAMES, 4 if ood else 2)
    facts = [_fact(rng, p) for p in people]
    target = rng.randrange(len(people))
    _, rel, true_value = facts[target]
    pool = {"city": CITIES, "job": JOBS, "pet": PETS}[rel]
    answer = rng.choice(["yes", "no"])
    value = true_value if answer == "yes" else rng.choice([v for v in pool if v != true_value])
    passage = " ".join(f[0] for f in facts)
    question = _question(people[target], rel, value, ood)
    tail = "Answer yes or no." if not ood else "Reply with yes or no only."
    prompt = f"{passage}\nQuestion: {question} {tail}" if not ood else f"Passage: {passage}\n{question} {tail}"
    return prompt, answer, {"answer": answer, "choices": ["yes", "no"]}


def _extract(rng: random.Random, ood: bool) -> Item:
    city, city2 = rng.sample(CITIES, 2)
    slots = {"name": rng.choice(NAMES), "city": city, "city2": city2, "day": rng.choice(DAYS),
             "month": rng.choice(MONTHS)}  # fmt: skip
    if not ood:
        field = rng.choice(list(EXTRACT_QUESTIONS))
        sentence = rng.choice(EXTRACT_SENTENCES).format(**slots)
        prompt = rng.choice(EXTRACT_QUESTIONS[field]).format(s=sentence)
    else:
        field = rng.choice(list(OOD_EXTRACT_QUESTIONS))
        sentence = rng.choice(OOD_EXTRACT).format(**slots)
        prompt = OOD_EXTRACT_QUESTIONS[field].format(s=sentence, name=slots["name"])
    return prompt, slots[field], {"answer": slots[field], "field": field}


def _count(rng: random.Random, ood: bool) -> Item:
    cats = OOD_CATEGORIES if ood else CATEGORIES
    cat = rng.choice(list(cats))
    k = rng.randint(0, 4 if ood else 3)
    n_fill = rng.randint(3, 5) if ood else rng.randint(max(1, 2 - k), 4)
    others = [w for c, ws in {**CATEGORIES, **OOD_CATEGORIES}.items() if c != cat for w in ws]
    words = rng.sample(cats[cat], k) + rng.sample(FILLER + tuple(rng.sample(others, 4)), n_fill)
    rng.shuffle(words)
    prompts = COUNT_OOD_PROMPTS + COUNT_PROMPTS if ood else COUNT_PROMPTS
    prompt = rng.choice(prompts).format(cat=cat, items=", ".join(words))
    return prompt, str(k), {"answer": str(k), "category": cat}


SUBTASKS: dict[str, Callable[[random.Random, bool], Item]] = {
    "sentiment": _sentiment,
    "topic": _topic,
    "yesno": _yesno,
    "extract": _extract,
    "count": _count,
}


def normalize_answer(text: str) -> str:
    """Lower-case; drop punctuation, articles and extra whitespace; spell numbers as digits."""
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ("a", "an", "the")]
    return " ".join(words)


@TASK_FAMILIES.register("nlp")
class NlpFamily(TaskFamily):
    """Short-answer NLP tasks (sentiment, topic, yes/no, extraction, counting), exact-match scored.

    Options:
        subtasks: Restrict generation to these sub-task names (default: all, equally likely).
    """

    description = "short-target NLP tasks: sentiment, topic, yes/no QA, extraction, counting"

    def make_item(self, rng: random.Random, ood: bool) -> Item:
        names = list(self.options.get("subtasks") or SUBTASKS)
        subtask = rng.choice(names)
        prompt, answer, meta = SUBTASKS[subtask](rng, ood)
        return prompt, answer, {**meta, "subtask": subtask}

    def verify(self, meta: dict[str, Any], completion: str) -> dict[str, Any]:
        extracted = normalize_answer(completion)
        return {"correct": extracted == normalize_answer(str(meta["answer"])), "extracted": extracted}
