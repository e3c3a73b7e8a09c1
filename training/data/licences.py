"""Which licence a Python distribution's metadata declares, and whether training may use it.

Permissive families only (MIT, BSD, Apache, PSF, ISC); a copyleft name anywhere in the metadata
(GPL, LGPL, AGPL, MPL, EPL, EUPL, CDDL, ...) excludes the package. The answer and what decided
it go into the corpus manifest as the package's provenance.
"""

from __future__ import annotations

import re

FAMILIES = ("MIT", "BSD", "Apache", "PSF", "ISC")
SPDX = {"MIT": "MIT", "MIT-0": "MIT", "0BSD": "BSD", "BSD-2-Clause": "BSD",
        "BSD-3-Clause": "BSD", "BSD-3-Clause-Clear": "BSD", "Apache-2.0": "Apache",
        "Apache-1.1": "Apache", "PSF-2.0": "PSF", "Python-2.0": "PSF", "ISC": "ISC"}
CLASSIFIERS = {"MIT License": "MIT", "MIT No Attribution License (MIT-0)": "MIT",
               "BSD License": "BSD", "Apache Software License": "Apache",
               "Python Software Foundation License": "PSF", "ISC License (ISCL)": "ISC"}
COPYLEFT = re.compile(r"\b(AGPL|LGPL|GPL|MPL|EUPL|EPL|CDDL)|(?i:\bGNU\b|Mozilla Public|"
                      r"Eclipse Public|copyleft|Affero)")
SHORT_TEXT = [(re.compile(r"\bMIT\b|\bExpat\b"), "MIT"), (re.compile(r"\bBSD\b"), "BSD"),
              (re.compile(r"\bApache\b"), "Apache"),
              (re.compile(r"\bPSF\b|Python Software Foundation"), "PSF"),
              (re.compile(r"\bISC\b"), "ISC")]
LONG_TEXT = [("Permission is hereby granted, free of charge", "MIT"),
             ("Redistribution and use in source and binary forms", "BSD"),
             ("Apache License", "Apache")]



def licence_of(meta) -> tuple[str | None, str]:
    """(families joined by '+', or None; what decided it) from a distribution's metadata.

    Order: ``License-Expression`` (every SPDX id, AND or OR alike, must be on the list; the
    only exception clause accepted is LLVM-exception), else the licence classifiers (all of
    them must be on the list), else the ``License`` text.  A copyleft name in any of them
    excludes the package, even when it also names a permissive licence.
    """
    expression = (meta.get("License-Expression") or "").strip()
    classifiers = [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or [])
                   if c.startswith("License ::") and c.count("::") >= 2]
    text = (meta.get("License") or "").strip()
    for source in (expression, " ".join(classifiers), text):
        if COPYLEFT.search(source):
            return None, f"copyleft: {COPYLEFT.search(source).group(0)}"
    if expression:
        plain = re.sub(r"\s+WITH\s+LLVM-exception\b", "", expression)
        ids = [t for t in re.split(r"[()\s]+|\bAND\b|\bOR\b", plain) if t]
        families = {SPDX.get(i) for i in ids}
        if None in families or not families:
            return None, f"expression {expression!r}"
        return "+".join(sorted(families)), f"expression {expression}"
    if classifiers:
        families = {CLASSIFIERS.get(c) for c in classifiers}
        if None in families:
            return None, f"classifiers {classifiers}"
        return "+".join(sorted(families)), f"classifiers {', '.join(classifiers)}"
    if text and text.upper() not in ("UNKNOWN", "NONE"):
        first = text.splitlines()[0]
        if len(text) <= 200 and "\n" not in text:
            found = {fam for rx, fam in SHORT_TEXT if rx.search(first)}
        else:
            found = {fam for phrase, fam in LONG_TEXT if phrase in text}
        if len(found) == 1:
            return found.pop(), f"text {first[:60]!r}"
        return None, f"text {first[:60]!r}"
    return None, "no licence in metadata"
