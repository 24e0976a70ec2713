"""Templates of verifiable arithmetic word problems.

Each template draws numbers for a difficulty level and returns the question, the exact integer
answer, GSM8K-style solution steps and the tuple of drawn numbers. (template name, numbers) is the
canonical problem: the train/test split hashes it, so a test problem never reappears in train
with only the names or objects changed.

Levels: 1 = one operation on one-digit numbers; 2 = one operation on two-digit numbers (or a
one-step word problem with larger numbers); 3 = two operations; 4 = three or more operations.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable

__all__ = ["Problem", "Template", "TEMPLATES"]

NAMES = [("Tom", "he"), ("Anna", "she"), ("Liam", "he"), ("Mia", "she"), ("Noah", "he"), ("Emma", "she"),
         ("Omar", "he"), ("Sofia", "she"), ("Ravi", "he"), ("Yuki", "she"), ("Lucas", "he"), ("Chloe", "she"),
         ("Mateo", "he"), ("Zara", "she"), ("Ben", "he"), ("Lena", "she")]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "stamps",
         "balloons", "crayons", "buttons"]
CONTAINERS = ["boxes", "bags", "jars", "baskets", "packs", "trays"]
PRICED = [("notebook", "notebooks"), ("sandwich", "sandwiches"), ("toy car", "toy cars"), ("ticket", "tickets"),
          ("plant", "plants"), ("mug", "mugs"), ("puzzle", "puzzles"), ("scarf", "scarves")]
VEHICLES = ["car", "train", "bus", "truck", "boat"]


@dataclasses.dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    steps: tuple[str, ...]
    numbers: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    task: str
    levels: tuple[int, ...]
    make: Callable[[random.Random, int], Problem]


def _person(r: random.Random, avoid: str = "") -> tuple[str, str]:
    return r.choice([p for p in NAMES if p[0] != avoid])


def _digits(r: random.Random, level: int, lo1: int = 1) -> int:
    """A one-digit number at level 1, a two-digit one above."""
    return r.randint(lo1, 9) if level == 1 else r.randint(10, 99)


def _p(question: str, answer: int, steps: list[str], *numbers: int) -> Problem:
    return Problem(question, answer, tuple(steps), tuple(numbers))


# ---- plain arithmetic -------------------------------------------------------------------------

def plain_sum(r, level):
    if level == 3:
        a, b = r.randint(100, 999), r.randint(100, 999)
    else:
        a, b = _digits(r, level), _digits(r, level)
    return _p(f"What is {a} + {b}?", a + b, [f"{a} + {b} = {a + b}."], a, b)


def plain_difference(r, level):
    if level == 3:
        a, b = r.randint(100, 999), r.randint(100, 999)
    else:
        a, b = _digits(r, level), _digits(r, level)
    a, b = max(a, b), min(a, b)
    return _p(f"What is {a} - {b}?", a - b, [f"{a} - {b} = {a - b}."], a, b)


def plain_product(r, level):
    a = _digits(r, 1, 2)
    b = {1: r.randint(2, 9), 2: r.randint(10, 99), 3: r.randint(100, 999)}[level]
    if level == 3:
        a = r.randint(10, 99)
    return _p(f"What is {a} * {b}?", a * b, [f"{a} * {b} = {a * b}."], a, b)


def plain_quotient(r, level):
    b = r.randint(2, 9)
    q = r.randint(1, 9) if level == 1 else r.randint(10, 99)
    return _p(f"What is {b * q} / {b}?", q, [f"{b * q} / {b} = {q}."], b * q, b)


def plain_multi(r, level):
    a, b, c = r.randint(2, 20), r.randint(2, 20), r.randint(2, 9)
    if level == 3:
        return _p(f"What is ({a} + {b}) * {c}?", (a + b) * c,
                  [f"First {a} + {b} = {a + b}.", f"Then {a + b} * {c} = {(a + b) * c}."], a, b, c)
    d = r.randint(1, (a + b) * c)
    v = (a + b) * c - d
    return _p(f"What is ({a} + {b}) * {c} - {d}?", v,
              [f"First {a} + {b} = {a + b}.", f"Then {a + b} * {c} = {(a + b) * c}.",
               f"Finally {(a + b) * c} - {d} = {v}."], a, b, c, d)


# ---- quantities and sharing -------------------------------------------------------------------

def quantities_more(r, level):
    (n, he), item = _person(r), r.choice(ITEMS)
    a, b = _digits(r, level, 2), _digits(r, level, 2)
    return _p(f"{n} has {a} {item}. Then {he} gets {b} more {item}. How many {item} does {n} have now?",
              a + b, [f"{n} has {a} + {b} = {a + b} {item} now."], a, b)


def quantities_less(r, level):
    (n, he), (f, _), item = _person(r), _person(r), r.choice(ITEMS)
    a, b = sorted((_digits(r, level, 2), _digits(r, level, 1)), reverse=True)
    f = f if f != n else "a friend"
    return _p(f"{n} had {a} {item} and gave {b} of them to {f}. How many {item} does {n} have left?",
              a - b, [f"{n} has {a} - {b} = {a - b} {item} left."], a, b)


def groups(r, level):
    (n, _), item, box = _person(r), r.choice(ITEMS), r.choice(CONTAINERS)
    a, b = r.randint(2, 9), (r.randint(2, 9) if level == 1 else r.randint(10, 40))
    return _p(f"{n} has {a} {box} with {b} {item} in each. How many {item} does {n} have in total?",
              a * b, [f"{n} has {a} * {b} = {a * b} {item}."], a, b)


def sharing(r, level):
    (n, _), item = _person(r), r.choice(ITEMS)
    k = r.randint(2, 5) if level == 1 else r.randint(2, 9)
    q = r.randint(2, 9) if level == 1 else r.randint(10, 30)
    return _p(f"{n} shares {k * q} {item} equally among {k} friends. How many {item} does each friend get?",
              q, [f"Each friend gets {k * q} / {k} = {q} {item}."], k * q, k)


def half_then_more(r, level):
    (n, he), (f, _), item = _person(r), _person(r), r.choice(ITEMS)
    f = f if f != n else "a friend"
    a, b = 2 * r.randint(3, 40), r.randint(2, 30)
    return _p(f"{n} has {a} {item}. {he.capitalize()} gives half of them to {f} and then finds {b} more. "
              f"How many {item} does {n} have now?", a // 2 + b,
              [f"{n} gives away {a} / 2 = {a // 2} {item} and keeps {a} - {a // 2} = {a // 2}.",
               f"After finding {b} more, {n} has {a // 2} + {b} = {a // 2 + b} {item}."], a, b)


def shop_multi_step(r, level):
    (n, he), (f, _), item = _person(r), _person(r), r.choice(ITEMS)
    f = f if f != n else "a friend"
    a, b, c = r.randint(2, 30), r.randint(2, 9), r.randint(2, 12)
    if level == 3:
        return _p(f"{n} has {a} {item}. {he.capitalize()} buys {b} packs with {c} {item} in each pack. "
                  f"How many {item} does {n} have now?", a + b * c,
                  [f"The packs hold {b} * {c} = {b * c} {item}.", f"{n} has {a} + {b * c} = {a + b * c} {item}."],
                  a, b, c)
    d = r.randint(1, a + b * c - 1)
    v = a + b * c - d
    return _p(f"{n} has {a} {item}. {he.capitalize()} buys {b} packs with {c} {item} in each pack, then gives "
              f"{d} {item} to {f}. How many {item} does {n} have now?", v,
              [f"The packs hold {b} * {c} = {b * c} {item}.", f"Before giving any away {n} has {a} + {b * c} = {a + b * c}.",
               f"After giving {d} away, {n} has {a + b * c} - {d} = {v} {item}."], a, b, c, d)


def farm(r, level):
    rows, per, dead, new = r.randint(3, 12), r.randint(4, 15), r.randint(1, 10), r.randint(2, 20)
    v = rows * per - dead + new
    return _p(f"A farmer plants {rows} rows of trees with {per} trees in each row. {dead} trees die, and then "
              f"the farmer plants {new} new trees. How many trees are there now?", v,
              [f"The farmer plants {rows} * {per} = {rows * per} trees.", f"After {dead} die there are "
               f"{rows * per} - {dead} = {rows * per - dead}.", f"With {new} new ones there are "
               f"{rows * per - dead} + {new} = {v} trees."], rows, per, dead, new)


# ---- money ------------------------------------------------------------------------------------

def money_total(r, level):
    (n, _), (one, many) = _person(r), r.choice(PRICED)
    k, p = r.randint(2, 9), r.randint(2, 9) if level == 1 else r.randint(10, 60)
    if level <= 2:
        return _p(f"One {one} costs ${p}. How many dollars does {n} pay for {k} {many}?", k * p,
                  [f"{k} {many} cost {k} * ${p} = ${k * p}."], k, p)
    (one2, many2) = r.choice([x for x in PRICED if x[0] != one])
    m, q = r.randint(2, 6), r.randint(3, 40)
    v = k * p + m * q
    return _p(f"{n} buys {k} {many} at ${p} each and {m} {many2} at ${q} each. How many dollars does {n} spend?",
              v, [f"The {many} cost {k} * ${p} = ${k * p}.", f"The {many2} cost {m} * ${q} = ${m * q}.",
                  f"Together {n} spends ${k * p} + ${m * q} = ${v}."], k, p, m, q)


def money_change(r, level):
    (n, _), (one, many) = _person(r), r.choice(PRICED)
    k, p = r.randint(2, 6), r.randint(2, 15)
    bill = next(b for b in (20, 50, 100, 200) if b >= k * p + (0 if level == 3 else 40))
    if level == 3:
        v = bill - k * p
        return _p(f"{n} buys {k} {many} for ${p} each and pays with a ${bill} bill. How many dollars of "
                  f"change does {n} get?", v, [f"The {many} cost {k} * ${p} = ${k * p}.",
                                               f"The change is ${bill} - ${k * p} = ${v}."], k, p, bill)
    (one2, _) = r.choice([x for x in PRICED if x[0] != one])
    q = r.randint(2, 40)
    v = bill - k * p - q
    return _p(f"{n} buys {k} {many} for ${p} each and one {one2} for ${q}, and pays with a ${bill} bill. "
              f"How many dollars of change does {n} get?", v,
              [f"The {many} cost {k} * ${p} = ${k * p}.", f"In total {n} pays ${k * p} + ${q} = ${k * p + q}.",
               f"The change is ${bill} - ${k * p + q} = ${v}."], k, p, q, bill)


def savings(r, level):
    (n, he), (one, _) = _person(r), r.choice(PRICED)
    s, w = r.randint(3, 25), r.randint(2, 12)
    c = r.randint(1, s * w)
    v = s * w - c
    if level == 3:
        return _p(f"{n} saves ${s} every week for {w} weeks and then spends ${c} on a {one}. How many dollars "
                  f"does {n} have left?", v, [f"{n} saves {w} * ${s} = ${s * w}.",
                                             f"After spending ${c}, {n} has ${s * w} - ${c} = ${v}."], s, w, c)
    g = r.randint(5, 50)
    return _p(f"{n} saves ${s} every week for {w} weeks, gets ${g} as a gift, and then spends ${c} on a {one}. "
              f"How many dollars does {n} have left?", v + g,
              [f"{n} saves {w} * ${s} = ${s * w}.", f"With the gift {he} has ${s * w} + ${g} = ${s * w + g}.",
               f"After spending ${c}, {n} has ${s * w + g} - ${c} = ${v + g}."], s, w, g, c)


# ---- rates and time ---------------------------------------------------------------------------

def rate_distance(r, level):
    vehicle = r.choice(VEHICLES)
    s, h = r.randint(20, 90), r.randint(2, 9)
    if level == 2:
        return _p(f"A {vehicle} travels {s} km every hour. How many km does it travel in {h} hours?", s * h,
                  [f"In {h} hours it travels {h} * {s} = {s * h} km."], s, h)
    t, h2 = r.randint(20, 90), r.randint(1, 5)
    v = s * h + t * h2
    return _p(f"A {vehicle} travels at {s} km per hour for {h} hours, then at {t} km per hour for {h2} more "
              f"hours. How many km does it travel in total?", v,
              [f"First it travels {s} * {h} = {s * h} km.", f"Then it travels {t} * {h2} = {t * h2} km.",
               f"In total it travels {s * h} + {t * h2} = {v} km."], s, h, t, h2)


def rate_reading(r, level):
    (n, he) = _person(r)
    p, d = r.randint(5, 40), r.randint(2, 12)
    if level == 2:
        return _p(f"{n} reads {p} pages every day. How many days does {n} need to read a {p * d}-page book?", d,
                  [f"{n} needs {p * d} / {p} = {d} days."], p, d)
    done = p * r.randint(1, 10)
    total = done + p * d
    return _p(f"A book has {total} pages. {n} has already read {done} pages and reads {p} pages every day. "
              f"How many more days does {n} need to finish the book?", d,
              [f"{n} has {total} - {done} = {p * d} pages left.", f"That takes {p * d} / {p} = {d} days."],
              total, done, p)


def time_minutes(r, level):
    (n, _) = _person(r)
    activity = r.choice(["practises the piano", "plays football", "studies", "swims", "paints"])
    if level == 2:
        h, m = r.randint(2, 5), r.randint(2, 59)
        return _p(f"{n} {activity} for {h} hours and {m} minutes. How many minutes is that?", 60 * h + m,
                  [f"{h} hours are {h} * 60 = {60 * h} minutes.", f"{60 * h} + {m} = {60 * h + m} minutes."], h, m)
    m, d, extra = r.randint(10, 90), r.randint(2, 7), r.randint(10, 120)
    v = m * d + extra
    return _p(f"{n} {activity} for {m} minutes on each of {d} days, plus {extra} minutes on Sunday. How many "
              f"minutes is that in total?", v,
              [f"On the {d} days it is {d} * {m} = {m * d} minutes.", f"With Sunday it is {m * d} + {extra} = {v} minutes."],
              m, d, extra)


def time_between(r, level):
    h1, m1 = r.randint(1, 9), r.choice(range(0, 60, 5))
    dur = r.randint(15, 240)
    end = h1 * 60 + m1 + dur
    h2, m2 = divmod(end, 60)
    if h2 > 11:
        h2, m2 = 11, 55
        dur = h2 * 60 + m2 - (h1 * 60 + m1)
    event = r.choice(["A film", "A train trip", "A concert", "A football match", "A class"])
    return _p(f"{event} starts at {h1}:{m1:02d} and ends at {h2}:{m2:02d} the same morning. How many minutes "
              f"does it last?", dur,
              [f"{h1}:{m1:02d} is {h1} * 60 + {m1} = {h1 * 60 + m1} minutes after midnight.",
               f"{h2}:{m2:02d} is {h2} * 60 + {m2} = {h2 * 60 + m2} minutes after midnight.",
               f"It lasts {h2 * 60 + m2} - {h1 * 60 + m1} = {dur} minutes."], h1, m1, h2, m2)


def ages(r, level):
    (n, _), (m, _) = _person(r), _person(r)
    m = m if m != n else "Sam"
    a, b, c = r.randint(3, 40), r.randint(2, 30), r.randint(2, 20)
    return _p(f"{n} is {a} years old. {m} is {b} years older than {n}. How old will {m} be in {c} years?",
              a + b + c, [f"{m} is {a} + {b} = {a + b} years old.", f"In {c} years {m} will be {a + b} + {c} = {a + b + c}."],
              a, b, c)


def _t(fn, task, levels):
    return Template(fn.__name__, task, tuple(levels), fn)


TEMPLATES: tuple[Template, ...] = (
    _t(plain_sum, "sum", (1, 2, 3)),
    _t(plain_difference, "difference", (1, 2, 3)),
    _t(plain_product, "product", (1, 2, 3)),
    _t(plain_quotient, "quotient", (1, 2)),
    _t(plain_multi, "multi_step", (3, 4)),
    _t(quantities_more, "quantities", (1, 2)),
    _t(quantities_less, "quantities", (1, 2)),
    _t(groups, "quantities", (1, 2)),
    _t(sharing, "sharing", (1, 2)),
    _t(half_then_more, "sharing", (3,)),
    _t(shop_multi_step, "multi_step", (3, 4)),
    _t(farm, "multi_step", (4,)),
    _t(money_total, "money", (1, 2, 3)),
    _t(money_change, "money", (3, 4)),
    _t(savings, "money", (3, 4)),
    _t(rate_distance, "rates", (2, 3)),
    _t(rate_reading, "rates", (2, 3)),
    _t(time_minutes, "time", (2, 3)),
    _t(time_between, "time", (3,)),
    _t(ages, "multi_step", (3,)),
)
