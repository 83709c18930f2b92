"""CLIP BPE tokenization in the Python standard library, as transformers 5's
CLIPTokenizer does it (the behaviour the shared fixtures README describes):
NFC, whitespace runs collapsed to one space, lower case; the special tokens
split out first; the pre-tokeniser regex
  's|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
(written out by hand: `re` has no \\p classes); byte-level symbols and BPE
with the end-of-word suffix </w>.

pack.py uses it to find which token-embedding rows the tests can reach. It is
checked against every prompt of the fixtures' tokenizer.json before use.
"""
import json
import unicodedata

BOS, EOS = 49406, 49407
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (openai/CLIP simple_tokenizer)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _kind(ch):
    if ch.isspace():
        return "s"
    cat = unicodedata.category(ch)
    if cat.startswith("L"):
        return "L"
    if cat.startswith("N"):
        return "N"
    return "o"


def pretokenize(text):
    """The regex's matches, left to right (whitespace is never part of one)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        con = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
        if con:
            out.append(con)
            i += len(con)
            continue
        k = _kind(ch)
        if k == "s":
            i += 1
        elif k == "N":
            out.append(ch)
            i += 1
        else:  # a run of letters, or of characters that are neither letter, number nor space
            j = i + 1
            while j < len(text) and _kind(text[j]) == k:
                j += 1
            out.append(text[i:j])
            i = j
    return out


class ClipBpe:
    def __init__(self, vocab_path, merges_path, pad_token="<|endoftext|>"):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        self.ranks = {tuple(l.split(" ")): i for i, l in enumerate(l for l in lines if l)}
        self.byte_char = bytes_to_unicode()
        # "!" as pad token is a registered special token: split out, id 0 (SD2, SDXL tokenizer_2).
        self.specials = SPECIALS + ((pad_token,) if pad_token not in SPECIALS else ())
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank = min(pairs)[0]
            if rank == 1 << 30:
                break
            a, b = next((parts[i], parts[i + 1]) for r, i in pairs if r == rank)
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self.cache[word] = parts
        return parts

    def _split_specials(self, text):
        pieces = [(text, False)]
        for sp in self.specials:
            out = []
            for piece, special in pieces:
                if special:
                    out.append((piece, True))
                    continue
                chunks = piece.split(sp)
                for k, chunk in enumerate(chunks):
                    if k:
                        out.append((sp, True))
                    out.append((chunk, False))
            pieces = out
        return pieces

    def encode(self, text):
        """Token ids without BOS / EOS / padding / truncation."""
        text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
        ids = []
        for piece, special in self._split_specials(text):
            if special:
                ids.append(self.vocab[piece])
                continue
            for word in pretokenize(piece):
                sym = "".join(self.byte_char[b] for b in word.encode("utf-8"))
                ids.extend(self.vocab[t] for t in self.bpe(sym))
        return ids
