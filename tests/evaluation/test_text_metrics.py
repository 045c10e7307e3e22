"""`rouge_bleu` against rouge_chinese + jieba + NLTK (the ADGEN recipe) and Google's rouge-score, on fixed pairs."""
import numpy as np
import pytest

from mindformers_hf.evaluation import rouge_bleu

ZH = [("这件衣服的版型很宽松，适合夏天穿着。", "这款连衣裙版型宽松，适合夏季穿着，显得清爽。"),
      ("简约的设计风格，百搭又时尚。", "简约设计，百搭时尚，日常通勤都很合适。"),
      ("", "空的预测也要计分。"),
      ("完全一样的句子。", "完全一样的句子。")]
EN = [("the cat sat on the mat", "a cat was sitting on the mat"),
      ("running quickly through the parks", "he runs quick through parks.\nthen he rests"),
      ("nothing in common", "entirely different words")]


def test_chinese_rouge_and_bleu_are_the_adgen_recipe():
    jieba = pytest.importorskip("jieba")
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    want = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    for pred, label in ZH:
        hypothesis, reference = list(jieba.cut(pred)), list(jieba.cut(label))
        if len(" ".join(hypothesis).split()) == 0:
            result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            result = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))[0]
        for k, v in result.items():
            want[k].append(round(v["f"] * 100, 4))
        bleu = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
        want["bleu-4"].append(round(bleu * 100, 4))
    want = {k: float(np.mean(v)) for k, v in want.items()}
    got = rouge_bleu([p for p, _ in ZH], [r for _, r in ZH], language="zh")
    assert got == pytest.approx(want, abs=1e-9)
    assert 0 < got["rouge-1"] < 100 and 0 < got["bleu-4"] < 100


def test_english_rouge_is_rouge_score():
    from rouge_score import rouge_scorer

    kinds = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    per_pair = [scorer.score(ref, pred) for pred, ref in EN]
    want = {k: sum(s[k].fmeasure for s in per_pair) / len(per_pair) for k in kinds}
    got = rouge_bleu([p for p, _ in EN], [r for _, r in EN], language="en")
    assert got == pytest.approx(want, abs=1e-12)
    assert got["rouge1"] > got["rouge2"] > 0


def test_rouge_bleu_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="language"):
        rouge_bleu(["a"], ["a"], language="fr")
