"""The house palette for colour-blind readers: every two of its colours, and each colour against the white page, stay
apart in CAM02-UCS under a simulation of each common colour-vision deficiency at full severity (colorspacious)."""
import itertools

import numpy as np
from colorspacious import cspace_convert, deltaE

from modern_updates.plotting import METHOD_COLORS, PALETTE, color_of

VISIONS = [None, 'deuteranomaly', 'protanomaly', 'tritanomaly']  # None: normal vision
MIN_PAIR = 10.0        # ΔE between two colours of the palette (a just-noticeable difference is about 1)
MIN_BACKGROUND = 30.0  # ΔE between a colour and the white page


def rgb(colour): return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255


def seen(colour, vision):
    "The colour as a reader with `vision` sees it (sRGB in [0, 1])."
    if vision is None: return rgb(colour)
    cvd = {'name': 'sRGB1+CVD', 'cvd_type': vision, 'severity': 100}
    return np.clip(cspace_convert(rgb(colour), cvd, 'sRGB1'), 0, 1)


def distance(a, b, vision): return float(deltaE(seen(a, vision), seen(b, vision), input_space='sRGB1'))


def too_close(colours, minimum=MIN_PAIR):
    "The pairs of `colours` that some vision sees less than `minimum` apart: (a, b, vision, ΔE)."
    return [(a, b, vision or 'normal', round(d, 1)) for a, b in itertools.combinations(colours, 2)
            for vision in VISIONS if (d := distance(a, b, vision)) < minimum]


def test_every_pair_of_the_palette_stays_apart():
    assert not too_close(PALETTE), f'palette colours too close (ΔE < {MIN_PAIR}): {too_close(PALETTE)}'


def test_every_colour_stands_out_on_white():
    pale = [(c, vision or 'normal', round(d, 1)) for c in PALETTE for vision in VISIONS
            if (d := distance(c, '#FFFFFF', vision)) < MIN_BACKGROUND]
    assert not pale, f'colours too close to the white page (ΔE < {MIN_BACKGROUND}): {pale}'


def test_methods_take_palette_colours():
    outside = {name: c for name, c in METHOD_COLORS.items() if c not in PALETTE}
    assert not outside, f'method colours outside the palette: {outside}'
    assert color_of('a method with no colour of its own') in PALETTE


def test_the_check_sees_what_colour_blind_readers_merge():
    # Okabe and Ito's yellow on white, and a red and an olive that deuteranomaly merges, are caught
    assert distance('#F0E442', '#FFFFFF', 'tritanomaly') < MIN_BACKGROUND
    assert too_close(['#D55E00', '#999933']) and not too_close(['#D55E00', '#999933'], minimum=6)
    assert distance('#D55E00', '#999933', None) > 2 * MIN_PAIR  # apart for normal vision
