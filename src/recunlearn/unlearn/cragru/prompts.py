"""Augmentation: the prompts that ask a language model to score a user's candidates (spec "Prompt").

A generate prompt holds a task line, the rules, the user's profile, the filtered history (one line per item:
genres, title, year and, where ratings exist, the rating scaled to 20-100) and every candidate exactly once
as "id: title (year)"; the model answers with a JSON object mapping each candidate id to a score 1-100.
A likelihood prompt holds the same profile and history and asks about one candidate at a time, so that a
candidate's score is the model's log-probability of answering "Yes". Messages go through the model's own
chat template (the backend applies it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...data.interactions import Dataset

POSITIVE, NEGATIVE = "Yes", "No"
_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")


@dataclass(frozen=True)
class Catalog:
    """What a prompt says about items and users: ids as the dataset names them, titles, years, genres."""

    ids: list[str]
    titles: list[str]
    years: list[str]
    genres: list[list[str]]
    profiles: list[str]

    @classmethod
    def from_dataset(cls, data: Dataset) -> "Catalog":
        ids = [str(label) for label in data.item_ids.labels.tolist()]
        info = data.item_info
        titles, years, genres = [], [], []
        for index, label in enumerate(ids):
            title = _text(info, index, "title")
            match = _YEAR.match(title) if title else None
            titles.append(match.group(1) if match else (title or f"item {label}"))
            year = match.group(2) if match else ""
            if not year and info is not None and "release_date" in info and pd.notna(info["release_date"].iat[index]):
                year = str(info["release_date"].iat[index].year)
            years.append(year)
            found = info["genres"].iat[index] if info is not None and "genres" in info else None
            genres.append([str(g) for g in found] if isinstance(found, (list, tuple, np.ndarray)) else [])
        profiles = [_profile(data.user_info, u) for u in range(data.n_users)]
        return cls(ids, titles, years, genres, profiles)

    def name(self, item: int) -> str:
        """ "title (year)" or the title alone."""
        return f"{self.titles[item]} ({self.years[item]})" if self.years[item] else self.titles[item]

    def text(self, item: int) -> str:
        """Title, year and genres: what the item clusters are computed from."""
        genres = ", ".join(self.genres[item])
        return f"{self.name(item)}. Genres: {genres}" if genres else self.name(item)


def _text(info: pd.DataFrame | None, index: int, column: str) -> str:
    if info is None or column not in info:
        return ""
    value = info[column].iat[index]
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _profile(info: pd.DataFrame | None, user: int) -> str:
    if info is None:
        return "unknown"
    age = _text(info, user, "age_range") or _text(info, user, "age")
    gender = {"M": "male", "F": "female"}.get(_text(info, user, "gender"), _text(info, user, "gender"))
    occupation = _text(info, user, "occupation")
    parts = [f"age {age}" if age else "", f"gender {gender}" if gender else "",
             f"occupation {occupation}" if occupation else ""]
    return ", ".join(p for p in parts if p) or "unknown"


def history_lines(catalog: Catalog, items: np.ndarray, ratings: np.ndarray | None) -> list[str]:
    lines = []
    for n, item in enumerate(items):
        genres = "|".join(catalog.genres[item]) or "unknown genre"
        line = f"- {genres} | {catalog.name(item)}"
        if ratings is not None:
            line += f" | rating {int(round(float(ratings[n]) * 20))}"
        lines.append(line)
    return lines


def _context(catalog: Catalog, user: int, items: np.ndarray, ratings: np.ndarray | None) -> str:
    known = ("Each history line is: genres | title (year) | the user's rating from 20 (disliked) to 100 (loved)."
             if ratings is not None else
             "Each history line is: genres | title (year). Only which movies the user watched is known, not "
             "how much they liked them (implicit feedback).")
    lines = history_lines(catalog, items, ratings) or ["- (no history left)"]
    return (f"User profile: {catalog.profiles[user]}.\n\n{known}\nUser history:\n" + "\n".join(lines))


def generate_messages(catalog: Catalog, user: int, history: np.ndarray, ratings: np.ndarray | None,
                      candidates: np.ndarray) -> list[dict]:
    """Chat messages asking for a JSON object {candidate id: score 1-100} covering every candidate once."""
    task = ("You are a movie recommender. Score how much the user below would enjoy each candidate movie, "
            "from 1 (not at all) to 100 (certainly).")
    rules = ("Rules: use the user's profile and history. Answer only with one JSON object that maps every "
             "candidate id to its score, each id exactly once, in the form {\"<id>\": <score>, ...}. "
             "No other text.")
    listing = "\n".join(f"{catalog.ids[item]}: {catalog.name(item)}" for item in candidates)
    user_text = f"{_context(catalog, user, history, ratings)}\n\nCandidates (id: title (year)):\n{listing}"
    return [{"role": "system", "content": f"{task}\n{rules}"}, {"role": "user", "content": user_text}]


def likelihood_messages(catalog: Catalog, user: int, history: np.ndarray, ratings: np.ndarray | None,
                        candidates: np.ndarray) -> list[list[dict]]:
    """One conversation per candidate, identical up to the candidate's line (so a backend can share the
    prefix), each asking for a one-word answer, Yes or No."""
    task = ("You are a movie recommender. Decide whether the user below would enjoy the candidate movie. "
            f"Answer with one word: {POSITIVE} or {NEGATIVE}.")
    context = _context(catalog, user, history, ratings)
    out = []
    for item in candidates:
        # the candidate's line ends the prompt: the shorter it is, the less each candidate costs
        question = (f"{context}\n\nWould this user enjoy the following movie? Answer {POSITIVE} or {NEGATIVE}.\n"
                    f"Candidate: {catalog.name(item)}")
        out.append([{"role": "system", "content": task}, {"role": "user", "content": question}])
    return out
