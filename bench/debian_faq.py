"""The Debian FAQ in several languages as question-answering sets (the SQuAD sample's format).

Usage: python bench/debian_faq.py [--languages en,de,fr,it,nl,pt,ru,ja,zh-cn]
       [--out var/data/debian-faq] [--held-out-share 0.34]

Why this set: it is public, written by people (the Debian FAQ, translated by Debian's
volunteer translators, not by a machine), the same questions exist in many languages (so
each language's figures sit beside English on the very same questions), and Debian ships it
as packages (`debian-faq`, `debian-faq-de`, ...), reachable here where the data hubs are not.

What it writes, per language, under OUT/<language>/:
- passages.jsonl: one passage per FAQ question, its answer's text (lists, code and all),
  WITHOUT the question heading, so a question must be matched to its answer, not to itself
  (a help centre whose customers asked its FAQ's questions word for word would be easy).
  Title: the chapter's title.
- questions.jsonl: the heading as the question, its id the section's anchor (the same in
  every language, so a seeded selection picks the same questions everywhere); gold answers:
  the answer's first sentence and its first paragraph (a grounded answer paraphrases either).
  A share of the questions (by a hash of the anchor, the same in every language) have their
  answer left out of the passages: the right reply to those is "I don't know"
  (`answerable: false`, like SQuAD's unanswerable questions).
Only sections whose English heading is a question (ends with "?") are kept, and only those
present in every requested language. The .deb files are fetched with `apt-get download`
(Debian's archive) and unpacked with `dpkg-deb`; they are kept under OUT/debs.
Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

from lxml import html

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("en", "de", "fr", "it", "nl", "pt", "ru", "ja", "zh-cn")
# Headings are "1.2. What is ..."; the number goes.
NUMBER = re.compile(r"^\s*[0-9]+(\.[0-9]+)*\.?\s*")
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def package(language: str) -> str:
    """The Debian package holding the FAQ in this language."""
    return "debian-faq" if language == "en" else f"debian-faq-{language}"


def chapters(root: Path, language: str) -> list[Path]:
    """The chapter pages of one language's unpacked package."""
    faq = root / "usr" / "share" / "doc" / "debian" / "FAQ"
    folder = faq if language == "en" else faq / language
    suffix = f".{language}.html"
    return sorted(p for p in folder.glob(f"*{suffix}") if not p.name.startswith("index."))


def unpacked(out: Path, language: str) -> Path:
    """Download (once) and unpack one language's package; the unpacked root."""
    debs = out / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    name = package(language)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", name], cwd=debs, check=True)
        found = sorted(debs.glob(f"{name}_*.deb"))
    root = out / "unpacked" / language
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
    return root


def _text(element: html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def sections(page: Path) -> dict[str, dict[str, str]]:
    """Each question section of a chapter: anchor -> heading, answer paragraphs, chapter title."""
    tree = html.fromstring(page.read_bytes())
    # "Chapter 1. Definitions and overview" (or "Kapitel 1. ..."): the words after the number.
    chapter = " ".join((tree.findtext(".//title") or "").split()).split(". ", 1)[-1]
    found: dict[str, dict[str, str]] = {}
    for section in tree.xpath('//div[@class="section"]'):
        heading = section.xpath('./div[@class="titlepage"]//h2[@class="title"]')
        anchors = heading[0].xpath("./a/@id") if heading else []
        if not anchors:
            continue
        blocks = []
        for child in section:
            if child.get("class") in ("titlepage", "section"):
                continue
            text = _text(child)
            if text:
                blocks.append(text)
        if blocks:
            found[anchors[0]] = {
                "question": NUMBER.sub("", _text(heading[0])),
                "paragraphs": blocks,
                "chapter": chapter,
            }
    return found


def held_out(anchor: str, share: float) -> bool:
    """Whether this question's answer stays out of the knowledge (same in every language)."""
    digest = int(hashlib.sha256(anchor.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < share


def first_sentence(text: str) -> str:
    """The first sentence of a paragraph (the paragraph itself when it has one)."""
    return SENTENCE_END.split(text, maxsplit=1)[0].strip()


def main() -> None:
    """Build every language's set and print a summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    parser.add_argument("--out", default=str(ROOT / "var" / "data" / "debian-faq"))
    parser.add_argument("--held-out-share", type=float, default=0.34)
    args = parser.parse_args()
    out = Path(args.out)
    languages = [x.strip() for x in args.languages.split(",") if x.strip()]
    if "en" not in languages:
        languages.insert(0, "en")
    by_language: dict[str, dict[str, dict[str, str]]] = {}
    for language in languages:
        root = unpacked(out, language)
        merged: dict[str, dict[str, str]] = {}
        for page in chapters(root, language):
            merged.update(sections(page))
        if not merged:
            sys.exit(f"{package(language)}: no FAQ sections found under {root}")
        by_language[language] = merged
    anchors = sorted(
        a
        for a, s in by_language["en"].items()
        if s["question"].endswith("?") and all(a in by_language[x] for x in languages)
    )
    summary: dict[str, object] = {"questions": len(anchors), "languages": {}}
    for language in languages:
        folder = out / language
        folder.mkdir(parents=True, exist_ok=True)
        passages, questions = [], []
        for anchor in anchors:
            section = by_language[language][anchor]
            answerable = not held_out(anchor, args.held_out_share)
            if answerable:
                passages.append(
                    {
                        "id": anchor,
                        "title": f"Debian FAQ: {section['chapter']}",
                        "text": "\n\n".join(section["paragraphs"]),
                    }
                )
            first = section["paragraphs"][0]
            questions.append(
                {
                    "id": anchor,
                    "question": section["question"],
                    "answers": list(dict.fromkeys([first_sentence(first), first])),
                    "answerable": answerable,
                    "passage_id": anchor,
                    "language": language,
                }
            )
        for name, rows in (("passages.jsonl", passages), ("questions.jsonl", questions)):
            with open(folder / name, "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        summary["languages"][language] = {
            "folder": str(folder),
            "passages": len(passages),
            "answerable": sum(q["answerable"] for q in questions),
            "held_out": sum(not q["answerable"] for q in questions),
        }
    print(json.dumps(summary, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
