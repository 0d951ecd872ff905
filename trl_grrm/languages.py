"""Language codes to the English names the GRRM judge and MT prompts were trained with."""

from __future__ import annotations

from collections.abc import Mapping

# The 17 codes of the released GRRM code base. Its prompts spell languages out in English.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "zh": "Chinese",
    "de": "German",
    "ru": "Russian",
    "ko": "Korean",
    "ja": "Japanese",
    "fr": "French",
    "es": "Spanish",
    "pt": "Portuguese",
    "it": "Italian",
    "nl": "Dutch",
    "th": "Thai",
    "ro": "Romanian",
    "ar": "Arabic",
    "el": "Greek",
    "vi": "Vietnamese",
    "uk": "Ukrainian",
}

# The ten TowerBlocks languages, the pool Cross-Lingual Augmentation draws new targets from.
TOWER_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "nl", "it", "es", "pt", "ko", "ru", "zh")


def language_name(code: str, extra_names: Mapping[str, str] | None = None) -> str:
    """Return the English name used in prompts for a language code.

    Two-letter codes (optionally with a region, ``zh-CN`` / ``zh_CN``) are looked up; anything longer than a
    code is taken to be a name already and passed through, as the reference code does.

    Example:
        >>> language_name("zh"), language_name("pt_BR"), language_name("Swahili")
        ('Chinese', 'Portuguese', 'Swahili')
    """
    names = {**LANGUAGE_NAMES, **(extra_names or {})}
    if code in names:
        return names[code]
    base = code.replace("_", "-").split("-")[0].lower()
    if len(base) in (2, 3) and base.isalpha() and (len(code) <= 3 or "-" in code or "_" in code):
        if base in names:
            return names[base]
        raise ValueError(
            f"Unknown language code {code!r}. Known codes: {', '.join(sorted(names))}. "
            "Pass the language's English name instead, or add it with `language_names={...}`."
        )
    return code
