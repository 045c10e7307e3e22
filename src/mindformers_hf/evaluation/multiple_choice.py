"""C-Eval / CMMLU / MMLU-style accuracy from local files in the C-Eval layout, in both published conventions.

Layout: `DIR/dev/{subject}_dev.csv` (few-shot examples) and `DIR/{split}/{subject}_{split}.csv`, with the
columns question, A, B, C, D, answer (CMMLU's Question/Answer are accepted too); an optional
`DIR/subject_mapping.json` ({subject: [english, chinese, ...]}) names each subject in the prompt.

- method="loglikelihood" (lm-eval's ceval/cmmlu tasks): the prompt is lm-eval's (description, few-shot examples
  "...答案： X" joined by blank lines, the question ending in "答案："); each choice " A".." D" is scored by its
  log-likelihood and the highest one is the prediction (lm-eval's `acc`).
- method="first_token" (the C-Eval authors' and MindSpore Transformers' scripts): the prompt is theirs
  ("...考试的单项选择题..." and examples "...答案：X"); the prediction is the letter whose token has the largest
  logit at the last prompt position.
"""
import csv
import json
import os

import numpy as np

LETTERS = ("A", "B", "C", "D")
DESCRIPTIONS = {
    "loglikelihood": "以下是中国关于{}的单项选择题，请选出其中的正确答案。\n\n",
    "first_token": "以下是中国关于{}考试的单项选择题，请选出其中的正确答案。\n\n",
}


def read_split(data_dir, subject, split):
    path = os.path.join(data_dir, split, f"{subject}_{split}.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    docs = []
    for number, row in enumerate(rows, 2):
        row = {key.strip().lower(): (value or "").strip() for key, value in row.items() if key is not None}
        missing = [key for key in ("question", *(letter.lower() for letter in LETTERS)) if key not in row]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        answer = row.get("answer", "").upper()
        if answer not in LETTERS:
            raise ValueError(f"{path}, line {number}: answer {answer!r} is not one of A/B/C/D")
        docs.append({"question": row["question"], **{letter: row[letter.lower()] for letter in LETTERS},
                     "answer": answer})
    return docs


def subjects_in(data_dir, split):
    suffix = f"_{split}.csv"
    return sorted(name[:-len(suffix)] for name in os.listdir(os.path.join(data_dir, split)) if name.endswith(suffix))


def _subject_name(data_dir, subject):
    path = os.path.join(data_dir, "subject_mapping.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            names = json.load(f).get(subject)
        if names:
            return names[1] if isinstance(names, list) and len(names) > 1 else names[0] if isinstance(names, list) \
                else names
    return subject.replace("_", " ")


def format_question(doc):
    return f"{doc['question']}\nA. {doc['A']}\nB. {doc['B']}\nC. {doc['C']}\nD. {doc['D']}\n答案："


def build_prompt(doc, shots, subject_name, method):
    """The prompt of one question: description, few-shot examples, the question (see the module doc)."""
    separator = " " if method == "loglikelihood" else ""  # lm-eval's target_delimiter; none in the C-Eval scripts
    examples = [format_question(shot) + separator + shot["answer"] for shot in shots]
    body = [*examples, format_question(doc)]
    if method == "loglikelihood":
        return DESCRIPTIONS[method].format(subject_name) + "\n\n".join(body)
    return DESCRIPTIONS[method].format(subject_name) + "".join(example + "\n\n" for example in examples) + body[-1]


def _logits(model, ids):
    return np.asarray(model(input_ids=np.asarray([ids], np.int64)).logits)[0].astype(np.float32)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _predict_loglikelihood(model, tokenizer, prompt):
    context = tokenizer.encode(prompt)
    scores = []
    for letter in LETTERS:
        whole = tokenizer.encode(prompt + " " + letter)  # lm-eval splits context+continuation the same way
        continuation = whole[len(context):]
        logprobs = _log_softmax(_logits(model, whole[:-1])[-len(continuation):])
        scores.append(float(logprobs[np.arange(len(continuation)), continuation].sum()))
    return LETTERS[int(np.argmax(scores))]


def _predict_first_token(model, tokenizer, prompt):
    letter_ids = [tokenizer.encode(letter, add_special_tokens=False)[-1] for letter in LETTERS]
    last = _logits(model, tokenizer.encode(prompt))[-1]
    return LETTERS[int(np.argmax(last[letter_ids]))]


def ceval_accuracy(model, tokenizer, data_dir, split="val", subjects=None, num_fewshot=5, method="loglikelihood"):
    """{"subjects": {subject: accuracy}, "average": mean over subjects, "overall": over all questions,
    "predictions": {subject: [letter, ...]}}."""
    predict = {"loglikelihood": _predict_loglikelihood, "first_token": _predict_first_token}.get(method)
    if predict is None:
        raise ValueError(f"ceval_accuracy: method must be 'loglikelihood' or 'first_token', got {method!r}")
    subjects = list(subjects) if subjects is not None else subjects_in(data_dir, split)
    if not subjects:
        raise ValueError(f"ceval_accuracy: no {split} files in {data_dir}")
    accuracy, predictions, correct, total = {}, {}, 0, 0
    for subject in subjects:
        shots = read_split(data_dir, subject, "dev")[:num_fewshot] if num_fewshot else []
        if len(shots) < num_fewshot:
            raise ValueError(f"ceval_accuracy: {subject} has {len(shots)} dev examples, {num_fewshot} asked")
        name = _subject_name(data_dir, subject)
        docs = read_split(data_dir, subject, split)
        predictions[subject] = [predict(model, tokenizer, build_prompt(doc, shots, name, method)) for doc in docs]
        hits = sum(p == doc["answer"] for p, doc in zip(predictions[subject], docs))
        accuracy[subject] = hits / len(docs)
        correct, total = correct + hits, total + len(docs)
    return {"subjects": accuracy, "average": float(np.mean(list(accuracy.values()))), "overall": correct / total,
            "predictions": predictions}
