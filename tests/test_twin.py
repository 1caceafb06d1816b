import hashlib

from bench.model.corpus import length_workload
from bench.model.tokenize import load_tokenizer
from bench.model.twin import CJK_FIRST, CJK_LAST, LABELS, SHAPES, VOCAB_SIZE, build_twin, build_vocab, twin_config


def weights_hash(model_dir) -> str:
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_model):
    build_twin(tmp_path / "again", "tiny", seed=0)
    build_twin(tmp_path / "other", "tiny", seed=1)
    assert weights_hash(tmp_path / "again") == weights_hash(tiny_model)
    assert weights_hash(tmp_path / "other") != weights_hash(tiny_model)


def test_vocab_has_exactly_21128_unique_entries_with_bert_specials():
    vocab = build_vocab()
    assert len(vocab) == VOCAB_SIZE == len(set(vocab))
    assert vocab[0] == "[PAD]" and {"[UNK]", "[CLS]", "[SEP]", "[MASK]"} <= set(vocab)


def test_tokenizer_size_and_one_token_per_cjk_character(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    assert len(tok) == VOCAB_SIZE
    for text in length_workload(50, seed=3).texts:
        cjk = [c for c in text if CJK_FIRST <= ord(c) <= CJK_LAST]
        pieces = tok.tokenize("".join(cjk))
        assert pieces == cjk  # one token each, none unknown


def test_base_config_has_structbert_shapes_and_is_marked_synthetic():
    cfg = twin_config(SHAPES["base"], seed=0)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (21128, 768, 12, 12)
    assert (cfg.intermediate_size, cfg.max_position_embeddings, cfg.type_vocab_size) == (3072, 512, 2)
    assert cfg.id2label == LABELS and cfg.structbench["synthetic"] is True


def test_twin_labels_are_split_so_parity_can_see_changes(tiny_model):
    """The centred classifier gives both labels on corpus text (else label agreement is vacuous)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from bench.model.tokenize import encode

    tok = load_tokenizer(str(tiny_model))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model)).eval()
    enc = {k: torch.from_numpy(v) for k, v in encode(tok, length_workload(64, seed=5).texts).items()}
    with torch.inference_mode():
        preds = model(**enc).logits.argmax(-1)
    share = float(preds.float().mean())
    assert 0.2 < share < 0.8
