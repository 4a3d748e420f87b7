"""PTB tokenization of captions, as the COCO caption metrics do it, in pure Python.

pycocoevalcap tokenizes every caption with Stanford CoreNLP 3.4.1's
``PTBTokenizer -preserveLines -lowerCase`` (Java) and then drops the tokens in
its ``PUNCTUATIONS`` list. :func:`ptb_tokenize` gives the same tokens without
Java: a longest-match lexer over the PTBLexer rules that captions meet (ties go
to the earlier rule, trailing context counts towards the length, as in JFlex).
What it does, by example (the text is lower-cased after lexing, as CoreNLP
does):

* clitics split: ``man's`` -> ``man 's``, ``don't`` -> ``do n't``,
  ``can't`` -> ``ca n't``, ``they're`` -> ``they 're``, ``James'`` ->
  ``james`` (the lone ``'`` is punctuation); ``cannot`` -> ``can not``,
  ``gonna`` -> ``gon na``, ``'tis`` -> ``'t is``;
* hyphenated words, numbers (``3.5``, ``1,000``, ``10:30``), ``2nd``,
  abbreviations with their period (``mr.``, ``st.``, ``u.s.``, ``e.g.``,
  ``etc.``, single letters ``a.``) stay whole; a sentence's final period is
  split off and dropped;
* ``(`` ``)`` ``[`` ``]`` ``{`` ``}`` become ``-lrb-`` ``-rrb-`` ``-lsb-``
  ``-rsb-`` ``-lcb-`` ``-rcb-`` and are *kept* (pycocoevalcap lists only the
  upper-case forms, which ``-lowerCase`` never produces); ``!!!``, ``?!``,
  ``$``, ``%``, ``&``, ``/``, ``#``, ``@`` are kept; ``. , ; : ! ? - --
  ...`` and every quote (straight, curly, guillemets, mapped to `` `` ``/``''``)
  are dropped; dashes (``–``, ``—``, ``---``) become ``--`` and are dropped;
* non-ASCII letters are kept (``café``); no British-to-American rewriting
  (CoreNLP 3.4.1's command line does not americanize: ``colour``, ``grey``
  stay).

Known differences from the Java tokenizer (kept out of the equality corpus,
``tests/fixtures/ptb_corpus.json``):

* Java lexes the whole batch as one stream, so an abbreviation at the end of a
  caption may be followed by an extra ``.`` token depending on the *next*
  caption; that token is punctuation and dropped, so the result is the same.
  ``A. The`` (a one-letter acronym before a capitalised function word) gives
  ``a`` in Java; here too, but only within one caption.
* Characters that Java reads as line breaks (``\\r``, ``\\v``, ``\\f``,
  U+0085, U+2028, U+2029) shift pycocoevalcap's caption alignment (its bug);
  here they are spaces (the Java-backed batch path replaces them too).
* Characters outside the Basic Multilingual Plane (emoji) are deleted by Java
  and here; rare Unicode letters, symbols and scripts may be classified
  differently (JFlex's Unicode tables are older than Python's); URLs, e-mail
  addresses, SGML tags, phone numbers and dates follow simplified rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from components.data.text import to_ascii

# pycocoevalcap/tokenizer/ptbtokenizer.py: the tokens removed after tokenizing
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])

# Character classes (JFlex [:letter:] / [:digit:] ~ Python's \w minus digits and _).
# Python's \w also holds the "other" numbers (superscripts, fractions, circled digits): not letters
_NOT_LETTER = "\u00B2\u00B3\u00B9\u00BC-\u00BE\u2070-\u209F\u2150-\u218F\u2460-\u24FF\u2776-\u2793"
_L = rf"(?:[^\W\d_{_NOT_LETTER}]|[\u00AD\u0300-\u036F])"
_D = r"\d"
_LD = rf"[^\W_{_NOT_LETTER}]"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSETC = rf"(?:{_APOS}|[`\u0091\u2018\u201B])"
_SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
_NUM = rf"(?:{_D}*(?:[.,\u066B\u066C]{_D}+)+|{_D}+(?:[.:,\u00AD\u066B\u066C]{_D}+)*)"
_NUMBER = rf"[-+]?{_NUM}"
_WORD = rf"{_L}(?:{_L}|{_D})*(?:[.!?]{_L}(?:{_L}|{_D})*)*"
_REDAUX = rf"{_APOS}(?:[msd]|re|ve|ll)"
_SWORD = r"(?:[^\W\d_]|\u00AD)*[A-MO-Za-mo-z]\u00AD*"
_SREDAUX = rf"n{_APOSETC}t"
# alternatives as separate rules, so that the longest wins (Python's | takes the first that matches)
_APOWORD = [rf"{_APOS}n{_APOS}?", rf"[ldj]{_APOS}", rf"dunkin{_APOS}", rf"somethin{_APOS}", rf"ol{_APOS}",
            rf"{_APOS}em", rf"[A-HJ-XZn]{_APOSETC}{_L}{{2}}{_L}*", rf"{_APOS}[2-9]0s", rf"{_APOS}till?",
            rf"{_L}{_L}*[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_L}*", rf"{_APOS}cause", r"cont'd\.?",
            r"nor'easter", r"c'mon", r"e'er", r"s'mores", r"ev'ry", r"li'l", r"nat'l"]
_HYPHEN = r"[-_\u058A\u2010\u2011]"
_THING = (rf"(?:[dol]{_APOSETC}{_LD})?{_LD}+"
          rf"(?:{_HYPHEN}(?:[dol]{_APOSETC}{_LD})?{_LD}+)*")
_THINGA = r"(?-i:[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+)"
_THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
_ACRO = r"(?:[A-Za-z](?:\.[A-Za-z])+|(?:Canada|Sino|Korean|EU|Japan|non)-U\.S|U\.S\.-(?:U\.K|U\.S\.S\.R))"
_HTHING = rf"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{_ACRO}\.))+"
_ABMONTH = r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
_ABDAYS = r"Mon|Tue|Tues|Wed|Thu|Thurs|Fri"
_ABSTATE = (r"Ala|Ariz|(?-i:A)rk|Calif|Colo|Conn|Dak|(?-i:D)el|Fla|Ga|(?-i:I)ll|Ind|Kans?|Ky|(?-i:L)a|(?-i:M)ass|Md|Mich"
            r"|Minn|(?-i:M)iss|Mo|Mont|Neb|Nev|Okla|(?-i:O)re|(?-i:P)a|Penn|Tenn|(?-i:T)ex|Va|Vt|(?-i:W)ash|Wisc?|Wyo")
_ABCOMP = r"Inc|Cos?|Corp|Pp?tys?|Ltd|Plc|Bancorp|Dept|Bhd|Assn|Univ|Intl|Sys"
_ABNUM = r"Ph|tel|est|ext|sq|ft"
_ABBREV3 = r"(?:ca|figs?|prop|nos?|art|bldg|pp|op)\."  # abbreviations only before a number
_ABPTIT = r"Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq"
_ABBREV1 = rf"(?:{_ABMONTH}|{_ABDAYS}|{_ABSTATE}|{_ABCOMP}|{_ABNUM}|{_ABPTIT}|etc|al|seq|Bldg)\."
_ABTITLE = (r"Mr|Mrs|Ms|(?-i:M)iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl"
            r"|Pvt|Mt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det")
_ABBREV4 = [_ACRO, r"a\.k\.a", _ABTITLE, r"vs|Alex|Wm|Jos|Cie|cf|TREAS|Invt|Elec|Natl|M[ft]g", r"[A-Za-z]"]
_SENTEND_WORDS = ("About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|Last"
                  "|Many|More|Mr\\.|Ms\\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then|There"
                  "|These|They|This|We|When|While|What|Yet|You")
# each first letter case-sensitive, as the lexer's [A]bout
_SENTEND_AFTER = "|".join(f"(?-i:{w[0]}){w[1:]}" for w in _SENTEND_WORDS.split("|"))
_QUOTES = rf"(?:{_APOS}|''|[`\u2018-\u201F\u0091-\u0094\u2039\u203A\u00AB\u00BB]{{1,2}})"
_MISC = ("[\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7\u0387\u2020-\u2023"
         "\u2032-\u2038\u2044\u207A-\u207F\u208A-\u208E\u2100-\u214F\u2190-\u21FF\u2200-\u22FF\u2300-\u23FF"
         "\u2600-\u26FF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]")

_LATEX_QUOTES = str.maketrans({"\u0091": "`", "\u2018": "`", "\u201B": "`", "\u2039": "`",
                               "\u0092": "'", "\u2019": "'", "\u203A": "'"})
_LATEX_DOUBLE = {"\u0093": "``", "\u201C": "``", "\u00AB": "``", "\u0094": "''", "\u201D": "''", "\u00BB": "''"}
_CURRENCY = {"\u00A2": "cents", "\u00A3": "#", "\u0080": "$", "\u00A4": "$", "\u20A0": "$", "\u20AC": "$"}
_FRACTIONS = {"\u00BC": "1/4", "\u00BD": "1/2", "\u00BE": "3/4", "\u2153": "1/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}


def _quote(tok: str, left: bool) -> str:
    """PTBLexer.latexQuotes: ASCII and curly quotes to `` ` `` ``'`` `` ` ` `` ``''``."""
    if left:
        tok = tok.replace("&apos;", "`").replace("'", "`").replace('"', "``").replace("&quot;", "``")
    else:
        tok = tok.replace("&apos;", "'").replace('"', "''").replace("&quot;", "''")
    tok = tok.translate(_LATEX_QUOTES)
    for k, v in _LATEX_DOUBLE.items():
        tok = tok.replace(k, v)
    return tok


def _same(tok: str) -> list[str]:
    return [tok]


def _period_too(tok: str) -> list[str]:
    """An abbreviation that ends a sentence: the word with its period, then a period."""
    return [tok, "."]


def _acronym(tok: str) -> list[str]:
    """``processAcronym``: ``I.`` -> ``I`` ``.``; ``U.S.`` -> ``U.S.`` ``.``."""
    return [tok[:-1], "."] if len(tok) == 2 else [tok, "."]


# (pattern, trailing context or None, action): the PTBLexer rules in the lexer's order.
_RULES: list[tuple[str, str | None, object]] = [
    (r"gon|wan", r"na", _same),  # gonna -> gon na
    (r"got", r"ta", _same),
    (r"lem|gim", r"me", _same),
    (rf"{_APOS}t", r"is|was", lambda t: [_quote(t, False)]),  # 'tis -> 't is
    (r"can", r"not", _same),  # cannot -> can not
    (r"</?[A-Za-z!][^>\r\n]*>", None, _same),  # SGML
    (r"&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, lambda t: ["--"]),  # SPMDASH
    (r"&amp;", None, lambda t: ["&"]),  # SPAMP
    (r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", None, _same),  # SPPUNC
    (_WORD, _REDAUX, _same),  # WORD/REDAUX
    (_SWORD, _SREDAUX, _same),  # SWORD/SREDAUX
    (_WORD, None, _same),
    *((w, None, _same) for w in _APOWORD),
    (rf"y{_APOS}", _L, _same),  # APOWORD2/[:letter:]
    (r"https?://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]", None, _same),  # FULLURL
    (r"(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}|(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+"
     r"(?:com|net|org|edu))(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?", None, _same),  # LIKELYURL
    (r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0]*@(?:[^ \t\n\f\r\"<>|().\u00A0]+\.)+[a-zA-Z]{2,4}", None, _same),
    (rf"[@\uFF20][a-zA-Z_][a-zA-Z_0-9]*|[#\uFF03]{_L}(?:{_L}|{_D}|_)*(?:{_L}|{_D})", None, _same),  # TWITTER
    (_REDAUX, r"[^A-Za-z]", lambda t: [_quote(t, False)]),
    (_SREDAUX, None, lambda t: [_quote(t, False)]),
    (rf"{_D}{{1,2}}[-/]{_D}{{1,2}}[-/]{_D}{{2,4}}", None, _same),  # DATE
    (_NUMBER, None, _same),
    (r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)", None, _same),
    (rf"(?:{_D}{{1,4}}[- \u00A0])?{_D}{{1,4}}(?:\\?/|\u2044){_D}{{1,4}}", None,
     lambda t: [t.replace(" ", "\u00A0")]),  # FRAC
    (r"[\u00BC\u00BD\u00BE\u2153-\u215E]", None, lambda t: [_FRACTIONS.get(t, t)]),  # FRAC2
    (r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls"
     rf"|Cap{_APOS}n|c{_APOS}est", None, lambda t: [t.replace("&amp;", "&")]),  # TBSPEC
    (_THING3, None, _same),
    (r"(?-i:[A-Z]*\$)|#", None, _same),  # DOLSIGN
    ("[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]", None,
     lambda t: [_CURRENCY.get(t, t)]),  # DOLSIGN2
    (rf"{_ACRO}\.", rf"{_SPACE}+(?:{_SENTEND_AFTER})[{_SPACE[1:-1]}\n]", _acronym),  # ACRONYM before a sentence
    (_ABBREV1, rf"{_SPACE}(?:{_SPACE}|(?-i:[A-Z])|<)", _period_too),  # ABBREV1/SENTEND
    (_ABBREV1, None, _same),
    (_ABBREV3, rf"[{_SPACE[1:-1]}\n]?{_D}", _same),
    *((rf"(?:{a})\.", None, _same) for a in _ABBREV4),  # ABBREV2
    *((rf"(?:{a})", _SPACE, _same) for a in _ABBREV4),  # ABBREV4/SPACE
    (_ACRO, _SPACE, _same),
    (rf"{_APOS}[0-9][0-9]", _SPACE, _same),  # TBSPEC2
    (rf"{_WORD}\.", r"[,;:]", _same),
    (r"(?:\([0-9]{3}\)[ \u00A0]?|[0-9]{3}[- \u00A0.])[0-9]{3}[- \u00A0.][0-9]{4}", None,
     lambda t: [t.replace(" ", "\u00A0").replace("(", "-LRB-").replace(")", "-RRB-")]),  # PHONE
    (r'"|&quot;', r"[A-Za-z0-9$]", lambda t: [_quote(t, True)]),
    (r'"|&quot;', None, lambda t: [_quote(t, False)]),
    (r"\+|[%&\u2030\u2031]|~|\^|\||\\", None, _same),
    (r"[()\[\]{}]", None, lambda t: [_BRACKETS[t]]),
    (r"<|>|&lt;|&gt;", None, _same),
    (r"-+", None, lambda t: ["--"] if 3 <= len(t) <= 4 else [t]),  # HYPHENS
    (r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]", None, lambda t: ["..."]),  # LDOTS
    (r"@+|#+|_+", None, _same),  # FNMARKS
    (r"\*+|(?:\\\*){1,3}", None, _same),  # ASTS
    (r"[,;:]", None, _same),
    (r"[?!]+", None, _same),
    (r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA]", None, _same),
    (r"=", None, _same),
    (r"/", None, _same),
    (rf"{_HTHING}\.", r"[,;:]", _same),
    (_HTHING, None, _same),
    (rf"{_THING}\.", r"[,;:]", _same),
    (_THING, None, _same),
    (rf"{_THINGA}\.", r"[,;:]", lambda t: [t.replace("&amp;", "&")]),
    (_THINGA, None, lambda t: [t.replace("&amp;", "&")]),
    (r"'", r"[A-Za-z][^ \t\n\r\u00A0]", lambda t: [_quote(t, True)]),  # invert quote
    (_REDAUX, None, lambda t: [_quote(t, False)]),
    (_QUOTES, None, lambda t: [_quote(t, False)]),
    (_MISC, None, _same),
]
_COMPILED = [(re.compile(p, re.I), re.compile(c, re.I) if c else None, a) for p, c, a in _RULES]
_SKIP = re.compile(r"[ \t\u00A0\u2000-\u200A\u3000\u200B\u200E\u200F\uFEFF\x00\n]+|&nbsp;")
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x85\u2028\u2029\n]")
_NON_BMP = re.compile("[\U00010000-\U0010FFFF]")
# captions made only of ASCII words need no lexer (most COCO captions, all synthetic ones)
_PLAIN = re.compile(r"[A-Za-z]+(?: +[A-Za-z]+)*")
_PLAIN_SPLIT = re.compile(r"cannot|gonna|wanna|gotta|lemme|gimme", re.I)


def ptb_lex(text: str) -> list[str]:
    """CoreNLP 3.4.1 PTBLexer tokens of one line, lower-cased, before punctuation removal."""
    # pycocoevalcap joins the captions with newlines: each is lexed as followed by one
    text = _NON_BMP.sub("", _LINE_BREAKS.sub(" ", text)) + "\n"
    out: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        skip = _SKIP.match(text, pos)
        if skip:
            pos = skip.end()
            continue
        best_len, best_end, best_action = 0, pos, None
        for pattern, context, action in _COMPILED:
            m = pattern.match(text, pos)
            if not m or m.end() == pos:
                continue
            end = total = m.end()
            if context is not None:
                c = context.match(text, end)
                if not c:
                    continue
                total = c.end()
            if total - pos > best_len:
                best_len, best_end, best_action = total - pos, end, action
        if best_action is None:  # untokenizable: deleted (CoreNLP logs a warning)
            pos += 1
            continue
        out.extend(best_action(text[pos:best_end]))  # type: ignore[operator]
        pos = best_end
    return [t.lower() for t in out]


def ptb_tokenize(text: str) -> list[str]:
    """pycocoevalcap's PTB tokens of one caption: lower case, punctuation tokens removed.

    Args:
        text: One raw caption (any case, punctuation, Unicode).

    Returns:
        The tokens ``PTBTokenizer().tokenize`` gives for it (see the module
        docstring for the known differences).
    """
    stripped = text.strip()
    if _PLAIN.fullmatch(stripped) and not _PLAIN_SPLIT.search(stripped):
        return stripped.lower().split()
    return [t for t in ptb_lex(text) if t not in PUNCTUATIONS]


def fold_tokens(tokens: Sequence[str]) -> list[str]:
    """PTB tokens as the vocabulary holds them: folded to ASCII (``café`` -> ``cafe``), split on any
    space left inside one (``5 1/2`` is one PTB token), empty ones dropped."""
    return [w for t in tokens for w in to_ascii(t).split()]


def vocab_tokens(text: str) -> list[str]:
    """The tokens of ``text`` that the prepare stage's vocabulary is made of (Python PTB, folded)."""
    return fold_tokens(ptb_tokenize(text))


def ptb_tokenize_all(captions: Sequence[str]) -> list[list[str]]:
    """:func:`ptb_tokenize` of each caption."""
    return [ptb_tokenize(c) for c in captions]


# --- the Java tokenizer, batched and cached -------------------------------------------------

PTB_JAR_NAME = "stanford-corenlp-3.4.1.jar"  # bundled with pycocoevalcap (tokenizer/)
PTB_CLASS = "edu.stanford.nlp.process.PTBTokenizer"


def ptb_jar() -> Path:
    """pycocoevalcap's bundled Stanford CoreNLP 3.4.1 jar."""
    import pycocoevalcap  # a dependency of the metrics; imported here to keep this module light

    return Path(next(iter(pycocoevalcap.__path__))) / "tokenizer" / PTB_JAR_NAME


def default_cache_dir() -> Path:
    """``$CAPSYNTH_PTB_CACHE``, else ``$XDG_CACHE_HOME/capsynth/ptb`` (``~/.cache/capsynth/ptb``)."""
    if os.environ.get("CAPSYNTH_PTB_CACHE"):
        return Path(os.environ["CAPSYNTH_PTB_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "capsynth" / "ptb"


def java_ptb_tokenize(captions: Sequence[str], *, java: str = "java") -> list[list[str]]:
    """pycocoevalcap's PTB tokens of all ``captions`` from ONE Java process.

    The same command as ``PTBTokenizer().tokenize`` (``-preserveLines
    -lowerCase``, one caption a line, punctuation removed after), except that
    characters Java would read as line breaks are spaces first, so the
    output lines stay aligned with the captions.
    """
    if not captions:
        return []
    lines = [_LINE_BREAKS.sub(" ", c) for c in captions]
    with tempfile.TemporaryDirectory(prefix="capsynth-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_text("\n".join(lines), encoding="utf-8")
        proc = subprocess.run([java, "-cp", str(ptb_jar()), PTB_CLASS, "-preserveLines", "-lowerCase", str(path)],
                              capture_output=True, check=True)
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines) or any(o.strip() for o in out[len(lines):]):
        raise RuntimeError(f"PTBTokenizer gave {len(out)} lines for {len(lines)} captions")
    return [[t for t in line.rstrip().split(" ") if t and t not in PUNCTUATIONS] for line in out[: len(lines)]]


def _cache_key(captions: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{PTB_JAR_NAME} {PTB_CLASS} -preserveLines -lowerCase\n".encode())
    for c in captions:
        digest.update(c.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def tokenize_captions(captions: Sequence[str], *, cache_dir: str | os.PathLike | None = None,
                      java: str | None = None) -> tuple[list[list[str]], str]:
    """PTB tokens of a whole dataset's captions: Java once, cached on disk, or pure Python.

    With ``java`` (an executable; found on PATH when None) the captions go
    to one :func:`java_ptb_tokenize` call and the result is kept under
    ``cache_dir`` in ``<sha256 of the captions>.json`` (written atomically),
    so the same captions are never sent to Java twice. Without Java, or with
    ``java=""``, :func:`ptb_tokenize` (pure Python, the same tokens on
    captions; see the module docstring).

    Returns:
        One token list per caption, and the tokenizer that made them:
        ``ptb_java`` (Java now or from the cache) or ``ptb_python``.
    """
    key = _cache_key(captions)
    cached = Path(cache_dir) / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        data = json.loads(cached.read_text(encoding="utf-8"))
        if data.get("n") == len(captions):
            return [t.split(" ") if t else [] for t in data["tokens"]], "ptb_java"
    java = shutil.which("java") if java is None else java
    if not java:
        return ptb_tokenize_all(captions), "ptb_python"
    tokens = java_ptb_tokenize(captions, java=java)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"tokenizer": "ptb_java", "n": len(captions), "tokens": [" ".join(t) for t in tokens]}, f)
            os.replace(tmp, cached)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return tokens, "ptb_java"


# --- back to text ---------------------------------------------------------------------------

_THINGA_LOWER = re.compile(r"(?<![^ ])[a-z]+(?:[+&][a-z]+)+(?![^ ])")
_ATTACH = re.compile(r" (n't|'(?:s|re|m|d|ll|ve))(?= |$)")


def detokenize(tokens: str | Sequence[str]) -> str:
    """Readable text from PTB tokens: clitics joined to their word.

    ``man 's`` -> ``man's``, ``do n't`` -> ``don't``, ``ca n't`` -> ``can't``,
    ``wo n't`` -> ``won't``; ``-lrb- hat -rrb-`` -> ``(hat)`` (and the other
    brackets). PTB-tokenizing the result gives ``tokens`` back
    (``tests/unit/test_ptb.py``). Text without such tokens (every synthetic
    caption) is returned unchanged.

    Args:
        tokens: Space-separated tokens, or a token sequence.
    
    """
    text = tokens if isinstance(tokens, str) else " ".join(tokens)
    if "'" not in text and "-" not in text and "&" not in text and "+" not in text:
        return text
    text = _ATTACH.sub(r"\1", text)
    text = re.sub(r"(?<![^ ])'t (is|was)(?![^ ])", r"'t\1", text)  # 't is -> 'tis
    text = _THINGA_LOWER.sub(lambda m: m.group(0).upper(), text)  # at&t -> AT&T (one token only in capitals)
    for token, bracket in _UNBRACKETS.items():
        text = re.sub(rf"(?<![^ ]){re.escape(token)}(?![^ ])", bracket, text)
    text = re.sub(r"([(\[{]) ", r"\1", text)
    return re.sub(r" ([)\]}])", r"\1", text)


_UNBRACKETS = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}"}
