"""A small CLIP-format BPE vocabulary learnt from the demo caption grammar.

The files follow openai/CLIP's layout exactly (the layout every SD tokenizer
folder uses): vocab.json lists the 256 byte symbols, the same 256 with the
end-of-word marker `</w>`, one entry per merge in merge order, then
`<|startoftext|>` and `<|endoftext|>`; merges.txt starts with a
`#version: 0.2` line. Only the merges differ: they are learnt here, by plain
BPE over the grammar's words, until every word is a single token.
"""

import json
import re
from collections import Counter

END = "</w>"
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77


def bytes_to_unicode():
    """CLIP/GPT-2's reversible byte -> printable character table (in order)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
                 + list(range(ord("\xae"), ord("\xff") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes)}


_BYTE_TO_CHAR = bytes_to_unicode()
# CLIP's pre-tokeniser for the lower-case ASCII text of the grammar.
_WORD_RE = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")


def _symbols(word):
    chars = [_BYTE_TO_CHAR[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + END,)


def learn_merges(word_counts):
    """Plain BPE: merge the most frequent adjacent pair until words are atoms.

    Ties break on the pair's text, so the result is deterministic.
    """
    words = {_symbols(w): c for w, c in word_counts.items()}
    merges = []
    while True:
        pairs = Counter()
        for syms, count in words.items():
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += count
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = {}
        for syms, count in words.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged


def build_vocab(merges):
    base = list(_BYTE_TO_CHAR.values())
    tokens = base + [t + END for t in base] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(folder, merges):
    import os
    os.makedirs(folder, exist_ok=True)
    vocab = build_vocab(merges)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {name: {"content": tok, "lstrip": False, "normalized": True, "rstrip": False,
                      "single_word": False}
               for name, tok in (("bos_token", BOS), ("eos_token", EOS), ("unk_token", EOS))}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(dict(special, pad_token=EOS), f, indent=2)
    config = dict(special, add_prefix_space=False, do_lower_case=True, errors="replace",
                  model_max_length=MAX_LENGTH, pad_token=EOS, tokenizer_class="CLIPTokenizer")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return vocab


class Tokenizer:
    """CLIPTokenizer's encoding for this vocabulary (BOS ... EOS, EOS padding)."""

    def __init__(self, merges):
        self.vocab = build_vocab(merges)
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {}

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        syms = list(_symbols(word))
        while len(syms) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(syms, syms[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            first, second = syms[i], syms[i + 1]
            out, k = [], 0
            while k < len(syms):
                if k + 1 < len(syms) and syms[k] == first and syms[k + 1] == second:
                    out.append(first + second)
                    k += 2
                else:
                    out.append(syms[k])
                    k += 1
            syms = out
        ids = [self.vocab[s] for s in syms]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        text = " ".join(text.lower().split())
        ids = [self.vocab[BOS]]
        for word in _WORD_RE.findall(text):
            ids.extend(self._bpe(word))
        ids = ids[:MAX_LENGTH - 1] + [self.vocab[EOS]]
        return ids + [self.vocab[EOS]] * (MAX_LENGTH - len(ids))


def corpus_word_counts(captions):
    counts = Counter()
    for c in captions:
        counts.update(_WORD_RE.findall(" ".join(c.lower().split())))
    return counts
