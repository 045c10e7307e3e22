"""ROUGE and BLEU on generated text, with the recipes the reference numbers are published with.

- Chinese (`language="zh"`): the ADGEN recipe of ChatGLM's fine-tuning scripts (and MindSpore Transformers):
  jieba words joined by spaces into `rouge_chinese`'s ROUGE-1/2/L F, and character BLEU-4 from NLTK's
  `sentence_bleu` with smoothing method 3; each pair scored x100 rounded to 4 places, then averaged.
- English (`language="en"`): Google's `rouge-score` (ROUGE-1/2/L/Lsum F-measure, Porter stemmer), averaged
  over pairs, in [0, 1] (the mean of per-pair scores, not `evaluate`'s bootstrap midpoint).
Install with the `[eval]` extra (jieba, rouge-chinese, nltk, rouge-score).
"""
import numpy as np


def _chinese(predictions, references):
    import logging

    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba.setLogLevel(logging.WARNING)
    scores = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    rouge = Rouge()
    for pred, label in zip(predictions, references):
        hypothesis, reference = " ".join(jieba.cut(pred)), " ".join(jieba.cut(label))
        if not hypothesis.split() or not reference.split():  # rouge_chinese raises on empty text
            result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            result = rouge.get_scores(hypothesis, reference)[0]
        for key in ("rouge-1", "rouge-2", "rouge-l"):
            scores[key].append(round(result[key]["f"] * 100, 4))
        bleu = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
        scores["bleu-4"].append(round(bleu * 100, 4))
    return {key: float(np.mean(values)) for key, values in scores.items()}


def _english(predictions, references):
    from rouge_score import rouge_scorer

    kinds = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
    scores = [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references)]
    return {kind: float(np.mean([s[kind].fmeasure for s in scores])) for kind in kinds}


def rouge_bleu(predictions, references, language="zh"):
    """Average ROUGE (and, for Chinese, BLEU-4) of `predictions` against `references`, one reference each."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"rouge_bleu: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge_bleu: no predictions")
    if language == "zh":
        return _chinese(predictions, references)
    if language == "en":
        return _english(predictions, references)
    raise ValueError(f"rouge_bleu: language must be 'zh' or 'en', got {language!r}")
