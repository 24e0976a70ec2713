"""Held-out phrasings of the arithmetic templates: never drawn for training.

For every template of `arithmetic_templates.TEMPLATES` at least one alternative of the same task
and levels and the same arithmetic, worded differently (other verbs, nouns, order of information,
question form; euros, miles, shelves...). The `arithmetic` source draws from these only with
``phrasings: unseen``, which it refuses for ``split: train``: a model trained on the seen
templates is evaluated here on problems whose wording it never saw (split by template, not only by
item; a demo that gained +13 points on held-out items of its training templates gained +5 on
unseen phrasings).

`ALTERNATIVES` maps each seen template's name to its held-out ones (names prefixed ``unseen_``).
"""

from __future__ import annotations

import random

from jaxevo.data.arithmetic_templates import TEMPLATES, Template, _digits, _p, _person

__all__ = ["UNSEEN_TEMPLATES", "ALTERNATIVES", "NEW_ITEMS", "NEW_CONTAINERS", "NEW_PRICED", "NEW_VEHICLES"]

# Items and contexts the seen templates do not use (variety, not a harder task).
NEW_ITEMS = ["pebbles", "acorns", "beads", "coins", "walnuts", "feathers", "ribbons", "tokens", "seeds",
             "keys", "pears", "lemons"]
NEW_CONTAINERS = [("crate", "crates"), ("bucket", "buckets"), ("drawer", "drawers"), ("tin", "tins"),
                  ("sack", "sacks"), ("bowl", "bowls")]
NEW_PRICED = [("lamp", "lamps"), ("umbrella", "umbrellas"), ("backpack", "backpacks"), ("candle", "candles"),
              ("kite", "kites"), ("hat", "hats"), ("towel", "towels"), ("map", "maps")]
NEW_VEHICLES = ["ferry", "tram", "motorbike", "coach", "van"]
CHILDREN = ["children", "classmates", "neighbours", "cousins", "teammates"]


def _his(he: str) -> str:
    return "his" if he == "he" else "her"


def _other(r: random.Random, n: str, fallback: str) -> str:
    f = _person(r, avoid=n)[0]
    return f if f != n else fallback


# ---- plain arithmetic -------------------------------------------------------------------------

def unseen_add_words(r, level):
    if level == 3:
        a, b = r.randint(100, 999), r.randint(100, 999)
    else:
        a, b = _digits(r, level), _digits(r, level)
    return _p(f"Add {a} and {b}. What do you get?", a + b, [f"{a} + {b} = {a + b}."], a, b)


def unseen_subtract_words(r, level):
    if level == 3:
        a, b = r.randint(100, 999), r.randint(100, 999)
    else:
        a, b = _digits(r, level), _digits(r, level)
    a, b = max(a, b), min(a, b)
    return _p(f"Take {b} away from {a}. Which number remains?", a - b, [f"{a} - {b} = {a - b}."], a, b)


def unseen_multiply_words(r, level):
    a = _digits(r, 1, 2)
    b = {1: r.randint(2, 9), 2: r.randint(10, 99), 3: r.randint(100, 999)}[level]
    if level == 3:
        a = r.randint(10, 99)
    return _p(f"Multiply {a} by {b} and give the product.", a * b, [f"{a} * {b} = {a * b}."], a, b)


def unseen_divide_words(r, level):
    b = r.randint(2, 9)
    q = r.randint(1, 9) if level == 1 else r.randint(10, 99)
    return _p(f"Divide {b * q} by {b}. Find the quotient.", q, [f"{b * q} / {b} = {q}."], b * q, b)


def unseen_chain_words(r, level):
    a, b, c = r.randint(2, 20), r.randint(2, 20), r.randint(2, 9)
    if level == 3:
        return _p(f"Start with {a}, add {b}, then multiply the result by {c}. Which number do you end with?",
                  (a + b) * c, [f"First {a} + {b} = {a + b}.", f"Then {a + b} * {c} = {(a + b) * c}."], a, b, c)
    d = r.randint(1, (a + b) * c)
    v = (a + b) * c - d
    return _p(f"Start with {a}, add {b}, multiply the result by {c}, and finally subtract {d}. "
              f"Which number do you end with?", v,
              [f"First {a} + {b} = {a + b}.", f"Then {a + b} * {c} = {(a + b) * c}.",
               f"Finally {(a + b) * c} - {d} = {v}."], a, b, c, d)


# ---- quantities and sharing -------------------------------------------------------------------

def unseen_jar_added(r, level):
    (n, _), item = _person(r), r.choice(NEW_ITEMS)
    a, b = _digits(r, level, 2), _digits(r, level, 2)
    return _p(f"A jar holds {a} {item}. {n} puts {b} more into it. Count the {item} in the jar now.",
              a + b, [f"The jar holds {a} + {b} = {a + b} {item} now."], a, b)


def unseen_shelf_taken(r, level):
    (n, _), item = _person(r), r.choice(NEW_ITEMS)
    a, b = sorted((_digits(r, level, 2), _digits(r, level, 1)), reverse=True)
    return _p(f"{n} takes {b} {item} from a shelf that held {a} of them. Find the number of {item} "
              f"still on the shelf.", a - b, [f"The shelf still holds {a} - {b} = {a - b} {item}."], a, b)


def unseen_each_container(r, level):
    item, (_, box) = r.choice(NEW_ITEMS), r.choice(NEW_CONTAINERS)
    a, b = r.randint(2, 9), (r.randint(2, 9) if level == 1 else r.randint(10, 40))
    return _p(f"Each of {a} {box} contains {b} {item}; find the total number of {item}.",
              a * b, [f"Altogether there are {a} * {b} = {a * b} {item}."], a, b)


def unseen_split_evenly(r, level):
    item, kids = r.choice(NEW_ITEMS), r.choice(CHILDREN)
    k = r.randint(2, 5) if level == 1 else r.randint(2, 9)
    q = r.randint(2, 9) if level == 1 else r.randint(10, 30)
    return _p(f"A teacher splits {k * q} {item} evenly between {k} {kids}. Work out how many {item} "
              f"one of them receives.", q, [f"One receives {k * q} / {k} = {q} {item}."], k * q, k)


def unseen_keep_half(r, level):
    (n, he), item = _person(r), r.choice(NEW_ITEMS)
    f = _other(r, n, "a neighbour")
    a, b = 2 * r.randint(3, 40), r.randint(2, 30)
    return _p(f"Out of {_his(he)} {a} {item}, {n} passes half on to {f}. Later {he} picks up {b} additional "
              f"{item}. Find {n}'s total now.", a // 2 + b,
              [f"Half of {a} is {a} / 2 = {a // 2}, so {n} keeps {a // 2} {item}.",
               f"With {b} more, {n} has {a // 2} + {b} = {a // 2 + b} {item}."], a, b)


def unseen_shop_delivery(r, level):
    item, (one, box) = r.choice(NEW_ITEMS), r.choice(NEW_CONTAINERS)
    a, b, c = r.randint(2, 30), r.randint(2, 9), r.randint(2, 12)
    if level == 3:
        return _p(f"A delivery of {b} {box}, {c} {item} per {one}, arrives at a market stall that already "
                  f"had {a} {item}. Determine the stall's stock of {item}.", a + b * c,
                  [f"The delivery brings {b} * {c} = {b * c} {item}.",
                   f"The stock is {a} + {b * c} = {a + b * c} {item}."], a, b, c)
    d = r.randint(1, a + b * c - 1)
    v = a + b * c - d
    return _p(f"A delivery of {b} {box}, {c} {item} per {one}, arrives at a market stall that already "
              f"had {a} {item}. By evening the stall sells {d} {item}. Determine the stall's stock of "
              f"{item}.", v,
              [f"The delivery brings {b} * {c} = {b * c} {item}.",
               f"Before selling, the stock is {a} + {b * c} = {a + b * c}.",
               f"After selling {d}, the stock is {a + b * c} - {d} = {v} {item}."], a, b, c, d)


def unseen_library(r, level):
    rows, per, dead, new = r.randint(3, 12), r.randint(4, 15), r.randint(1, 10), r.randint(2, 20)
    v = rows * per - dead + new
    return _p(f"A small library fills {rows} shelves with {per} novels apiece. Readers lose {dead} of the "
              f"novels; afterwards a neighbour donates {new} more. Determine how many novels the library "
              f"owns.", v,
              [f"The shelves hold {rows} * {per} = {rows * per} novels.", f"Losing {dead} leaves "
               f"{rows * per} - {dead} = {rows * per - dead}.", f"The donation makes "
               f"{rows * per - dead} + {new} = {v} novels."], rows, per, dead, new)


# ---- money ------------------------------------------------------------------------------------

def unseen_bill_euros(r, level):
    (n, _), (one, many) = _person(r), r.choice(NEW_PRICED)
    k, p = r.randint(2, 9), r.randint(2, 9) if level == 1 else r.randint(10, 60)
    if level <= 2:
        return _p(f"{n} orders {k} {many}, each priced at {p} euros. Work out the bill in euros.", k * p,
                  [f"The bill is {k} * {p} = {k * p} euros."], k, p)
    (one2, many2) = r.choice([x for x in NEW_PRICED if x[0] != one])
    m, q = r.randint(2, 6), r.randint(3, 40)
    v = k * p + m * q
    return _p(f"{n} orders {k} {many} priced at {p} euros apiece, along with {m} {many2} priced at {q} "
              f"euros apiece. Work out the bill in euros.", v,
              [f"The {many} come to {k} * {p} = {k * p} euros.", f"The {many2} come to {m} * {q} = {m * q} euros.",
               f"The bill is {k * p} + {m * q} = {v} euros."], k, p, m, q)


def unseen_change_note(r, level):
    (n, _), (one, many) = _person(r), r.choice(NEW_PRICED)
    k, p = r.randint(2, 6), r.randint(2, 15)
    bill = next(b for b in (20, 50, 100, 200) if b >= k * p + (0 if level == 3 else 40))
    if level == 3:
        v = bill - k * p
        return _p(f"Paying with a {bill}-euro note, {n} gets {k} {many} at {p} euros each. Which amount, in "
                  f"euros, should the cashier hand back?", v,
                  [f"The {many} cost {k} * {p} = {k * p} euros.", f"The cashier hands back {bill} - {k * p} = {v} euros."],
                  k, p, bill)
    (one2, _) = r.choice([x for x in NEW_PRICED if x[0] != one])
    q = r.randint(2, 40)
    v = bill - k * p - q
    return _p(f"Paying with a {bill}-euro note, {n} gets {k} {many} at {p} euros each plus a single {one2} "
              f"at {q} euros. Which amount, in euros, should the cashier hand back?", v,
              [f"The {many} cost {k} * {p} = {k * p} euros.", f"The purchase totals {k * p} + {q} = {k * p + q} euros.",
               f"The cashier hands back {bill} - {k * p + q} = {v} euros."], k, p, q, bill)


def unseen_piggy_bank(r, level):
    (n, he), (one, _) = _person(r), r.choice(NEW_PRICED)
    s, w = r.randint(3, 25), r.randint(2, 12)
    c = r.randint(1, s * w)
    v = s * w - c
    if level == 3:
        return _p(f"Every month {n} puts {s} euros into a piggy bank. After {w} months {he} takes out {c} euros "
                  f"to buy a {one}. What amount stays in the piggy bank, in euros?", v,
                  [f"The bank collects {w} * {s} = {s * w} euros.",
                   f"Taking out {c} leaves {s * w} - {c} = {v} euros."], s, w, c)
    g = r.randint(5, 50)
    return _p(f"Every month {n} puts {s} euros into a piggy bank. After {w} months a grandparent adds "
              f"{g} euros, and then {n} takes out {c} euros to buy a {one}. What amount stays in the piggy "
              f"bank, in euros?", v + g,
              [f"The bank collects {w} * {s} = {s * w} euros.", f"The grandparent's gift makes {s * w} + {g} = {s * w + g}.",
               f"Taking out {c} leaves {s * w + g} - {c} = {v + g} euros."], s, w, g, c)


# ---- rates and time ---------------------------------------------------------------------------

def unseen_miles_per_hour(r, level):
    vehicle = r.choice(NEW_VEHICLES)
    s, h = r.randint(20, 90), r.randint(2, 9)
    if level == 2:
        return _p(f"Going {s} miles an hour, how far does a {vehicle} get in {h} hours? Answer in miles.",
                  s * h, [f"The distance is {h} * {s} = {s * h} miles."], s, h)
    t, h2 = r.randint(20, 90), r.randint(1, 5)
    v = s * h + t * h2
    return _p(f"For the first {h} hours of a trip a {vehicle} averages {s} miles an hour; for the remaining "
              f"{h2} hours it averages {t} miles an hour. Find the length of the whole trip in miles.", v,
              [f"The first part is {s} * {h} = {s * h} miles.", f"The second part is {t} * {h2} = {t * h2} miles.",
               f"The trip is {s * h} + {t * h2} = {v} miles."], s, h, t, h2)


def unseen_pages_pace(r, level):
    (n, _) = _person(r)
    p, d = r.randint(5, 40), r.randint(2, 12)
    if level == 2:
        return _p(f"A {p * d}-page novel is read at a pace of {p} pages per day. After how many days is it "
                  f"finished?", d, [f"It is finished after {p * d} / {p} = {d} days."], p, d)
    done = p * r.randint(1, 10)
    total = done + p * d
    return _p(f"Out of a {total}-page report, {n} has covered {done} pages so far. Going on at {p} pages a "
              f"day, in how many days will {n} reach the end?", d,
              [f"There remain {total} - {done} = {p * d} pages.", f"At {p} a day that is {p * d} / {p} = {d} days."],
              total, done, p)


def unseen_convert_minutes(r, level):
    (n, he) = _person(r)
    activity = r.choice(["gardening", "knitting", "cycling", "baking", "rehearsing"])
    if level == 2:
        h, m = r.randint(2, 5), r.randint(2, 59)
        return _p(f"Express {h} hours {m} minutes of {activity} in minutes only.", 60 * h + m,
                  [f"{h} hours make {h} * 60 = {60 * h} minutes.", f"Adding {m} gives {60 * h} + {m} = {60 * h + m} minutes."],
                  h, m)
    m, d, extra = r.randint(10, 90), r.randint(2, 7), r.randint(10, 120)
    v = m * d + extra
    return _p(f"On each of {d} days {n} spends {m} minutes {activity}; at the weekend {he} adds one more "
              f"session of {extra} minutes. Find the total number of minutes.", v,
              [f"The {d} days give {d} * {m} = {m * d} minutes.", f"The extra session makes {m * d} + {extra} = {v} minutes."],
              m, d, extra)


def unseen_open_hours(r, level):
    h1, m1 = r.randint(1, 9), r.choice(range(0, 60, 5))
    dur = r.randint(15, 240)
    end = h1 * 60 + m1 + dur
    h2, m2 = divmod(end, 60)
    if h2 > 11:
        h2, m2 = 11, 55
        dur = h2 * 60 + m2 - (h1 * 60 + m1)
    place = r.choice(["a bakery", "a museum", "a swimming pool", "a market", "a workshop"])
    return _p(f"One morning the doors of {place} open at {h1}:{m1:02d} and close at {h2}:{m2:02d}. For how "
              f"many minutes are they open?", dur,
              [f"Opening time is {h1} * 60 + {m1} = {h1 * 60 + m1} minutes past midnight.",
               f"Closing time is {h2} * 60 + {m2} = {h2 * 60 + m2} minutes past midnight.",
               f"The doors are open {h2 * 60 + m2} - {h1 * 60 + m1} = {dur} minutes."], h1, m1, h2, m2)


def unseen_born_before(r, level):
    (n, _) = _person(r)
    m = _other(r, n, "Sam")
    a, b, c = r.randint(3, 40), r.randint(2, 30), r.randint(2, 20)
    return _p(f"{m} was born {b} years before {n}, who is {a} today. What age will {m} reach {c} years "
              f"from now?", a + b + c,
              [f"Today {m} is {a} + {b} = {a + b}.", f"In {c} years {m} will be {a + b} + {c} = {a + b + c}."],
              a, b, c)


# Each held-out template inherits the task and levels of the seen template it rephrases.
_REPHRASED = {
    "plain_sum": (unseen_add_words,),
    "plain_difference": (unseen_subtract_words,),
    "plain_product": (unseen_multiply_words,),
    "plain_quotient": (unseen_divide_words,),
    "plain_multi": (unseen_chain_words,),
    "quantities_more": (unseen_jar_added,),
    "quantities_less": (unseen_shelf_taken,),
    "groups": (unseen_each_container,),
    "sharing": (unseen_split_evenly,),
    "half_then_more": (unseen_keep_half,),
    "shop_multi_step": (unseen_shop_delivery,),
    "farm": (unseen_library,),
    "money_total": (unseen_bill_euros,),
    "money_change": (unseen_change_note,),
    "savings": (unseen_piggy_bank,),
    "rate_distance": (unseen_miles_per_hour,),
    "rate_reading": (unseen_pages_pace,),
    "time_minutes": (unseen_convert_minutes,),
    "time_between": (unseen_open_hours,),
    "ages": (unseen_born_before,),
}

_SEEN = {t.name: t for t in TEMPLATES}
UNSEEN_TEMPLATES: tuple[Template, ...] = tuple(
    Template(fn.__name__, _SEEN[seen].task, _SEEN[seen].levels, fn)
    for seen, fns in _REPHRASED.items() for fn in fns)
ALTERNATIVES: dict[str, tuple[str, ...]] = {seen: tuple(fn.__name__ for fn in fns) for seen, fns in _REPHRASED.items()}
