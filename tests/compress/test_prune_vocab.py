import numpy as np
import pytest
import torch

from slimbert.compress.prune_vocab import check_wordpiece, plan_vocab, prune_vocab
from slimbert.data import Split, TextClassificationData
from slimbert.errors import ModelError

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["good", "bad", "movie", "the", "play", "##ing", "##ed", "##er", "sun", "moon", "star",
         "p", "l", "##e", "##d", "##l", "##a", "##y", "!"]


def tiny_bert(folder, head="classifier"):
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(SPECIAL + WORDS), hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                        num_labels=2)
    torch.manual_seed(0)
    model = (BertForSequenceClassification if head == "classifier" else BertForMaskedLM)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer, model.eval()


def corpus(texts):
    labels = np.arange(len(texts)) % 2
    split = Split(texts=texts, labels=labels)
    return TextClassificationData({"train": split, "dev": split, "test": split}, ["neg", "pos"])


TEXTS = ["the good movie", "Playing the BAD movie!", "the movie is playing good"]


def test_kept_rows_are_corpus_tokens_plus_specials(tmp_path):
    _, tokenizer, _ = tiny_bert(tmp_path / "m")
    plan = plan_vocab(tokenizer, TEXTS, keep_ascii_chars=False)
    # "is" is not in the vocab: it becomes [UNK], which is special anyway
    assert plan.tokens == SPECIAL + ["good", "bad", "movie", "the", "play", "##ing", "!"]
    assert list(plan.kept_ids) == sorted(plan.kept_ids)


def test_reloaded_pruned_model_gives_identical_logits_on_the_corpus(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, tokenizer, model = tiny_bert(tmp_path / "m")
    original = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    new_tokenizer, info = prune_vocab(model, tokenizer, corpus(TEXTS))
    assert info["embedding_rows_after"] < info["embedding_rows_before"] == len(SPECIAL + WORDS)
    out = tmp_path / "pruned"
    model.save_pretrained(out)
    new_tokenizer.save_pretrained(out)
    tok2 = AutoTokenizer.from_pretrained(out)
    model2 = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model2.config.vocab_size == info["embedding_rows_after"] == len(tok2)
    for text in TEXTS:
        assert tok2.tokenize(text) == tokenizer.tokenize(text)
    with torch.no_grad():
        before = original(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
        after = model2(**tok2(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_unseen_words_fall_back_to_kept_pieces_or_unk(tmp_path):
    _, tokenizer, model = tiny_bert(tmp_path / "m")
    assert tokenizer.tokenize("played sun") == ["play", "##ed", "sun"]
    with_chars, _ = prune_vocab(model, tokenizer, corpus(TEXTS), keep_ascii_chars=True)
    # ##ed and sun were never seen: the word is spelled from kept pieces, or is [UNK]
    assert with_chars.tokenize("played sun") == ["play", "##e", "##d", "[UNK]"]
    _, tokenizer, model = tiny_bert(tmp_path / "m2")
    bare, _ = prune_vocab(model, tokenizer, corpus(TEXTS), keep_ascii_chars=False)
    assert bare.tokenize("played sun") == ["[UNK]", "[UNK]"]


def test_the_test_split_does_not_choose_the_vocabulary(tmp_path):
    _, tokenizer, model = tiny_bert(tmp_path / "m")
    data = TextClassificationData({"train": Split(texts=["the good movie"], labels=np.array([1])),
                                   "dev": Split(texts=["the bad movie"], labels=np.array([0])),
                                   "test": Split(texts=["the moon star"], labels=np.array([1]))},
                                  ["neg", "pos"])
    new_tokenizer, info = prune_vocab(model, tokenizer, data, keep_ascii_chars=False)
    assert info["corpus_splits"] == ["train", "dev"] and info["corpus_texts"] == 2
    assert new_tokenizer.tokenize("the moon star good bad") == ["the", "[UNK]", "[UNK]", "good", "bad"]
    _, tokenizer, model = tiny_bert(tmp_path / "m2")
    everything, _ = prune_vocab(model, tokenizer, data, splits=["train", "dev", "test"],
                                keep_ascii_chars=False)
    assert everything.tokenize("the moon star") == ["the", "moon", "star"]
    with pytest.raises(ModelError, match="no validation split"):
        prune_vocab(model, everything, data, splits=["train", "validation"])


def test_min_count_drops_rare_tokens_and_checks_only_untouched_texts(tmp_path):
    _, tokenizer, model = tiny_bert(tmp_path / "m")
    # "the" and "movie" occur 3 times, "good" and "play ##ing" twice, "bad" and "!" once
    plan = plan_vocab(tokenizer, TEXTS, keep_ascii_chars=False, min_count=2)
    assert plan.tokens == SPECIAL + ["good", "movie", "the", "play", "##ing"]
    new_tokenizer, info = prune_vocab(model, tokenizer, corpus(TEXTS), splits=["train"], min_count=2,
                                      keep_ascii_chars=False)
    assert info["embedding_rows_after"] == len(SPECIAL) + 5
    # the text with "bad" and "!" tokenizes differently now, so only the other two are checked
    assert info["corpus_texts"] == 3 and info["texts_tokenized_unchanged"] == 2
    assert new_tokenizer.tokenize(TEXTS[1]) == ["play", "##ing", "the", "[UNK]", "movie", "[UNK]"]


def test_masked_lm_output_embeddings_follow_the_input(tmp_path):
    folder, tokenizer, model = tiny_bert(tmp_path / "m", head="mlm")
    ids = tokenizer(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        full = model(**ids).logits
    new_tokenizer, info = prune_vocab(model, tokenizer, corpus(TEXTS))
    kept = torch.as_tensor(plan_vocab(tokenizer, TEXTS).kept_ids)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with torch.no_grad():
        pruned = model(**new_tokenizer(TEXTS[0], return_tensors="pt")).logits
    assert pruned.shape[-1] == info["embedding_rows_after"]
    torch.testing.assert_close(pruned, full[..., kept], rtol=0, atol=1e-5)


def test_non_wordpiece_tokenizers_are_refused_by_name():
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(BPE(vocab={"a": 0, "b": 1}, merges=[])))
    with pytest.raises(ModelError) as err:
        check_wordpiece(bpe)
    assert "WordPiece" in err.value.message and "BPE" in err.value.message
