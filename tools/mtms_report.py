#!/usr/bin/python3
"""tools/mtms_report.py: a training report of an mtms model, as an HTML page
with PNG figures, from the database's tables alone.  Run by tools/report.sh.

    mtms_report.py MODEL [--samples RELATION] [--out DIR]

Connects with libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE, ...)
and writes DIR/index.html (default DIR: ./mtms-report-MODEL) with:

  * training curves per stage, unit (scene, task): validation loss and AUC
    at every checkpoint (against rows trained), the kept checkpoint marked,
    from mtms_training_info(model, version);
  * AUC per scene and task of the active version next to the previous kept
    version: test AUC from mtms_evaluate(model, samples, version) with
    --samples, else the stored validation AUC of mtms_versions(model);
  * with --samples: a reliability plot per scene (CTR, and CVR on clicked
    rows: mean prediction against observed rate in score deciles) and the
    score distribution per scene and task.

Everything over the samples is aggregated in SQL (a few hundred rows reach
Python whatever the table's size).  Prints the page's path.
"""
import argparse
import datetime
import html
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

TASKS = ("ctr", "cvr", "ctcvr")
STAGES = ("embedding", "ctcvr", "finetune")
COLORS = {"ctr": "tab:blue", "cvr": "tab:orange", "ctcvr": "tab:green"}
SCENES_PER_FIGURE = 6
MAX_SCENES = 24                 # curves and calibration: the largest scenes
BUCKETS = 10                    # calibration: score deciles per scene and task,
BUCKET_ROWS = 50                # or fewer buckets, of at least this many rows
HIST_LO, HIST_HI, HIST_BINS = -6.0, 0.0, 48     # histograms over log10(p)


class Report:
    """The page being written: sections of HTML, figures, notes."""

    def __init__(self, out):
        self.out = out
        self.parts = []
        self.figures = []

    def h2(self, text):
        self.parts.append("<h2>%s</h2>" % html.escape(text))

    def p(self, text, cls=None):
        attr = ' class="%s"' % cls if cls else ""
        self.parts.append("<p%s>%s</p>" % (attr, html.escape(text)))

    def note(self, text):
        self.p(text, "note")

    def table(self, header, rows):
        out = ["<table><tr>"]
        out += ["<th>%s</th>" % html.escape(str(h)) for h in header]
        out.append("</tr>")
        for r in rows:
            out.append("<tr>" + "".join("<td>%s</td>" % html.escape(fmt(v)) for v in r) + "</tr>")
        out.append("</table>")
        self.parts.append("".join(out))

    def figure(self, fig, name, caption):
        path = os.path.join(self.out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        self.figures.append(name)
        self.parts.append('<figure><img src="%s" alt="%s"><figcaption>%s</figcaption></figure>'
                          % (html.escape(name), html.escape(caption), html.escape(caption)))

    def write(self, title):
        page = os.path.join(self.out, "index.html")
        with open(page, "w", encoding="utf-8") as f:
            f.write("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title>\n"
                    "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;}"
                    "table{border-collapse:collapse;margin:1em 0;}"
                    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;}"
                    ".note{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px;}"
                    "img{max-width:100%%;}figcaption{color:#444;font-size:90%%;}</style>"
                    "</head><body>\n<h1>%s</h1>\n" % (html.escape(title), html.escape(title)))
            f.write("\n".join(self.parts))
            f.write("\n</body></html>\n")
        return page


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "%.4f" % v
    return str(v)


def query(cur, q, args=None):
    cur.execute(q, args)
    return cur.fetchall()


# ---------------------------------------------------------------------------
# The model and its versions

def model_section(rep, cur, model):
    rows = query(cur, "SELECT scenes, fields, embedding_dim, hidden, options::text"
                      "  FROM mtms_model WHERE name = %s", (model,))
    if not rows:
        sys.exit("mtms_report: model \"%s\" does not exist (or is not visible to this role)" % model)
    scenes, fields, dim, hidden, options = rows[0]
    rep.p("Scenes: %s.  Fields: %s.  Embedding dimension %s, towers %s, options %s."
          % (", ".join(scenes), ", ".join(fields), dim, hidden, options))
    versions = query(cur, "SELECT version, active, trained_at, samples_relation, samples, metrics"
                          "  FROM mtms_versions(%s) ORDER BY version", (model,))
    if not versions:
        sys.exit("mtms_report: model \"%s\" has not been trained" % model)
    rep.h2("Kept versions")
    rep.table(("version", "active", "trained at", "samples relation", "samples"),
              [(v[0], "yes" if v[1] else "", v[2].strftime("%Y-%m-%d %H:%M:%S") if v[2] else None,
                v[3], v[4]) for v in versions])
    active = next(v for v in versions if v[1])
    older = [v for v in versions if v[0] < active[0]]
    previous = older[-1] if older else None
    return scenes, active, previous


# ---------------------------------------------------------------------------
# Training curves (mtms_training_info)

def training_history(rep, cur, model, version):
    """Rows of mtms_training_info for version, or None with a note."""
    cur.execute("SELECT to_regprocedure('mtms_training_info(text,integer)') IS NOT NULL")
    if not cur.fetchone()[0]:
        rep.note("No training curves: this database's mtms has no mtms_training_info(model, version), "
                 "the per-checkpoint training history (an mtms from before it; "
                 "ALTER EXTENSION mtms UPDATE after installing a newer one).")
        return None
    try:
        cur.execute("SAVEPOINT history")
        rows = query(cur, "SELECT stage, scene, task, checkpoint, rows, train_loss, valid_loss,"
                          "       valid_auc, kept"
                          "  FROM mtms_training_info(%s, %s)"
                          " ORDER BY stage, scene, task, checkpoint", (model, version))
        cur.execute("RELEASE SAVEPOINT history")
    except psycopg2.Error as e:
        cur.execute("ROLLBACK TO SAVEPOINT history")
        rep.note("No training curves: mtms_training_info failed: %s" % str(e).strip())
        return None
    if not rows:
        rep.note("No training curves: version %d has no recorded training history "
                 "(it was trained before mtms recorded one)." % version)
        return None
    return rows


def curves_section(rep, cur, model, active, scenes):
    version = active[0]
    rep.h2("Training curves of version %d" % version)
    rows = training_history(rep, cur, model, version)
    if rows is None:
        return
    units = {}
    for stage, scene, task, cp, nrows, tl, vl, auc, kept in rows:
        units.setdefault(stage, {}).setdefault(scene, {}).setdefault(task, []).append(
            (cp, nrows, tl, vl, auc, kept))
    order = {s: i for i, s in enumerate(scenes)}
    rep.p("Validation loss (solid; training loss dashed) and validation AUC at every checkpoint "
          "of every unit, checkpoint 0 being the starting parameters; the star marks the kept "
          "checkpoint, whose parameters the version holds.")
    for stage in sorted(units, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES)):
        names = sorted(units[stage], key=lambda s: order.get(s, len(order)))
        if len(names) > MAX_SCENES:
            rep.note("Stage %s: the first %d of %d scenes are drawn." % (stage, MAX_SCENES, len(names)))
            names = names[:MAX_SCENES]
        for i in range(0, len(names), SCENES_PER_FIGURE):
            chunk = names[i:i + SCENES_PER_FIGURE]
            fig = curves_figure(stage, chunk, units[stage])
            suffix = "" if len(names) <= SCENES_PER_FIGURE else "_%d" % (i // SCENES_PER_FIGURE + 1)
            rep.figure(fig, "curves_%s%s.png" % (stage, suffix),
                       "Stage %s: validation loss and AUC per checkpoint, scenes %s."
                       % (stage, ", ".join(chunk)))


def curves_figure(stage, names, by_scene):
    """Per scene a column; per task of the stage two rows: loss, AUC."""
    tasks = [t for t in TASKS if any(t in by_scene[s] for s in names)]
    fig, axes = plt.subplots(2 * len(tasks), len(names),
                             figsize=(3.3 * len(names) + 0.8, 2.1 * 2 * len(tasks) + 0.6),
                             squeeze=False)
    for col, scene in enumerate(names):
        for i, task in enumerate(tasks):
            curves_panels(axes[2 * i][col], axes[2 * i + 1][col], stage, scene, task,
                          by_scene[scene].get(task), col == 0, i == len(tasks) - 1)
    return fig


def curves_panels(ax_loss, ax_auc, stage, scene, task, pts, first_col, last_row):
    color = COLORS[task]
    ax_loss.set_title("%s: %s %s" % (stage, scene, task.upper()), fontsize=10)
    if first_col:
        ax_loss.set_ylabel("valid loss")
        ax_auc.set_ylabel("valid AUC")
    ax_loss.grid(alpha=0.3)
    ax_auc.grid(alpha=0.3)
    if not pts:
        for ax in (ax_loss, ax_auc):
            ax.text(0.5, 0.5, "not trained", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        return
    by_rows = all(p[1] is not None for p in pts)
    xs = [p[1] if by_rows else p[0] for p in pts]
    ax_loss.plot(xs, [p[3] for p in pts], "-o", ms=3, color=color, label="validation")
    tl = [(x, p[2]) for x, p in zip(xs, pts) if p[2] is not None]
    if tl:
        ax_loss.plot(*zip(*tl), "--", color=color, alpha=0.5, lw=1, label="training")
    aucs = [p[4] for p in pts]
    if any(a is not None for a in aucs):
        ax_auc.plot(xs, [a if a is not None else math.nan for a in aucs], "-o", ms=3, color=color)
    else:
        ax_auc.text(0.5, 0.5, "no AUC (one class only)", ha="center", va="center",
                    transform=ax_auc.transAxes, fontsize=8)
        ax_auc.set_yticks([])
    for x, p in zip(xs, pts):
        if p[5]:
            ax_loss.plot([x], [p[3]], "*", ms=14, color=color, mec="black", label="kept")
            if p[4] is not None:
                ax_auc.plot([x], [p[4]], "*", ms=14, color=color, mec="black")
    ax_loss.legend(fontsize=7)
    if last_row:
        ax_auc.set_xlabel("rows trained" if by_rows else "checkpoint")


# ---------------------------------------------------------------------------
# AUC of the active version against the previous one

def evaluate(cur, model, samples, version):
    return {(r[0], r[1]): r[2:] for r in query(
        cur, "SELECT scene, task, auc, n, positives FROM mtms_evaluate(%s, %s::regclass, %s)",
        (model, samples, version))}


def stored(metrics):
    out = {}
    for scene, tasks in (metrics or {}).items():
        for task, m in tasks.items():
            out[(scene, task)] = (m.get("valid_auc"), None, None)
    return out


def auc_section(rep, cur, model, samples, scenes, active, previous):
    what = "test AUC on %s" % samples if samples else "validation AUC (stored with each version)"
    rep.h2("AUC per scene and task: %s" % what)
    versions = [v for v in (previous, active) if v is not None]
    figures = {}
    for v in versions:
        figures[v[0]] = evaluate(cur, model, samples, v[0]) if samples else stored(v[5])
    if previous is None:
        rep.note("Version %d is the only kept version: nothing to compare it with." % active[0])
    keys = [(s, t) for s in scenes for t in TASKS if any((s, t) in figures[v[0]] for v in versions)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(keys) + 2), 4.2))
    width = 0.8 / len(versions)
    for i, v in enumerate(versions):
        ys = [figures[v[0]].get(k, (None,))[0] for k in keys]
        xs = [j + (i - (len(versions) - 1) / 2) * width for j in range(len(keys))]
        label = "version %d%s" % (v[0], " (active)" if v[1] else " (previous)")
        ax.bar(xs, [y if y is not None else 0 for y in ys], width, label=label,
               color="tab:blue" if v[1] else "tab:gray")
        for x, y in zip(xs, ys):
            ax.annotate("%.3f" % y if y is not None else "n/a", (x, y or 0), ha="center",
                        va="bottom", fontsize=7, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    ax.set_xticks(range(len(keys)))
    ticks = ["%s\n%s" % k for k in keys]
    if samples:
        ticks = ["%s\n%s pos." % (t, figures[active[0]].get(k, (None, None, "?"))[2])
                 for t, k in zip(ticks, keys)]
    ax.set_xticklabels(ticks, fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("AUC")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("AUC per scene and task (%s)" % ("test" if samples else "validation"))
    rep.figure(fig, "auc_versions.png",
               "%s of the active version%s per scene and task; the dotted line is chance (0.5)."
               % (what[0].upper() + what[1:],
                  " and of the previous kept version" if previous else ""))
    header = ["scene", "task"] + ["AUC v%d" % v[0] for v in versions]
    if samples:
        header += ["n", "positives"]
    rows = []
    for k in keys:
        r = list(k) + [figures[v[0]].get(k, (None,))[0] for v in versions]
        if samples:
            r += list(figures[active[0]].get(k, (None, None, None))[1:])
        rows.append(r)
    rep.table(header, rows)


# ---------------------------------------------------------------------------
# Calibration and score distribution over the samples (aggregated in SQL)

SCORES_SQL = """
WITH s AS MATERIALIZED (
    SELECT scene, click, click AND coalesce(conversion, false) AS conv,
           mtms_score({model}, scene, 'ctr', features) AS p_ctr,
           mtms_score({model}, scene, 'cvr', features) AS p_cvr
      FROM {samples}
     WHERE scene = ANY ({scenes})
),
p AS (
    SELECT scene, 'ctr' AS task, p_ctr AS p, click AS y FROM s
    UNION ALL
    SELECT scene, 'cvr', p_cvr, conv FROM s WHERE click
    UNION ALL
    SELECT scene, 'ctcvr', p_ctr * p_cvr, conv FROM s
),
c AS (
    SELECT scene, task, p, y, count(*) OVER (PARTITION BY scene, task) AS n
      FROM p
),
b AS (
    SELECT scene, task, p, y,
           ntile(greatest(1, least({buckets}, n / {bucket_rows})::int))
               OVER (PARTITION BY scene, task ORDER BY p) AS bucket,
           width_bucket(log(greatest(p, 1e-12)), {lo}, {hi}, {bins}) AS bin
      FROM c
)
SELECT 'calibration', scene, task, bucket, count(*), avg(p), avg(y::int)
  FROM b WHERE task <> 'ctcvr' GROUP BY scene, task, bucket
UNION ALL
SELECT 'histogram', scene, task, bin, count(*), NULL, NULL
  FROM b GROUP BY scene, task, bin
UNION ALL
SELECT 'mean', scene, task, 0, count(*), avg(p), avg(y::int)
  FROM b GROUP BY scene, task
"""


def score_aggregates(cur, model, samples, scenes):
    q = sql.SQL(SCORES_SQL).format(
        model=sql.Literal(model), samples=sql.SQL(samples), scenes=sql.Literal(list(scenes)),
        buckets=sql.Literal(BUCKETS), bucket_rows=sql.Literal(BUCKET_ROWS), lo=sql.Literal(HIST_LO), hi=sql.Literal(HIST_HI),
        bins=sql.Literal(HIST_BINS))
    calib, hist, means = {}, {}, {}
    for kind, scene, task, k, n, mean_p, rate in query(cur, q):
        if kind == "calibration":
            calib.setdefault((scene, task), []).append((k, n, mean_p, float(rate)))
        elif kind == "histogram":
            hist.setdefault((scene, task), {})[k] = n
        else:
            means[(scene, task)] = (mean_p, float(rate))
    return calib, hist, means


def calibration_section(rep, scenes, calib, samples):
    rep.h2("Calibration on %s" % samples)
    names = [s for s in scenes if (s, "ctr") in calib][:MAX_SCENES]
    if not names:
        rep.note("No rows of the model's scenes in %s." % samples)
        return
    fig, axes = plt.subplots(2, len(names), figsize=(3.3 * len(names) + 0.6, 6.4),
                             squeeze=False)
    for col, scene in enumerate(names):
        for row, task in enumerate(("ctr", "cvr")):
            ax = axes[row][col]
            pts = sorted(calib.get((scene, task), []))
            top = max([p[2] for p in pts] + [p[3] for p in pts] + [1e-6]) * 1.1
            ax.plot([0, top], [0, top], ":", color="black", lw=1, label="perfect")
            if pts:
                ax.plot([p[2] for p in pts], [p[3] for p in pts], "-o", ms=4,
                        color=COLORS[task], label="%s (%d rows)" % (task, sum(p[1] for p in pts)))
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_title("%s %s" % (scene, task.upper()))
            ax.set_xlabel("mean predicted p%s" % task.upper())
            ax.set_ylabel("observed rate" if col == 0 else "")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
    rep.figure(fig, "calibration.png",
               "Reliability per scene: the rows of a scene in up to %d buckets of equal count by "
               "score (deciles; fewer, of %d rows or more, when the scene has few rows), each "
               "bucket's mean prediction against its observed rate; CTR over every "
               "row, CVR over the clicked rows (label: conversion).  On the dotted diagonal the "
               "model is calibrated; above it, it under-predicts." % (BUCKETS, BUCKET_ROWS))


def histogram_section(rep, scenes, hist, means, samples):
    rep.h2("Score distribution on %s" % samples)
    names = [s for s in scenes if any((s, t) in hist for t in TASKS)][:MAX_SCENES]
    if not names:
        return
    width = (HIST_HI - HIST_LO) / HIST_BINS
    used = [min(max(k, 1), HIST_BINS) for c in hist.values() for k in c]
    lo = math.floor(HIST_LO + (min(used) - 1) * width) if used else HIST_LO
    hi = min(HIST_HI, math.ceil(HIST_LO + max(used) * width)) if used else HIST_HI
    fig, axes = plt.subplots(len(names), 3, figsize=(11, 2.2 * len(names) + 0.8),
                             squeeze=False, sharex=True)
    for row, scene in enumerate(names):
        for col, task in enumerate(TASKS):
            ax = axes[row][col]
            counts = hist.get((scene, task), {})
            # bin 0: below 1e-6; bin HIST_BINS + 1: p = 1 exactly
            values = [0] * HIST_BINS
            for k, n in counts.items():
                values[min(max(k, 1), HIST_BINS) - 1] += n
            ax.stairs(values, [10 ** (HIST_LO + i * width) for i in range(HIST_BINS + 1)],
                      fill=True, color=COLORS[task], alpha=0.8)
            mean = means.get((scene, task))
            if mean:
                ax.axvline(mean[0], color="black", lw=1.2, label="mean score %.4f" % mean[0])
                if mean[1] > 0:
                    ax.axvline(mean[1], color="red", lw=1.2, ls="--",
                               label="observed rate %.4f" % mean[1])
                ax.legend(fontsize=7, loc="upper left")
            ax.set_xscale("log")
            ax.set_xlim(10 ** lo, 10 ** hi)
            ax.set_title("%s p%s (%d rows)" % (scene, task.upper(), sum(counts.values())), fontsize=9)
            if col == 0:
                ax.set_ylabel("rows")
            if row == len(names) - 1:
                ax.set_xlabel("score (log scale)")
            ax.grid(alpha=0.3)
    rep.figure(fig, "score_histograms.png",
               "Scores of the active version per scene and task (CTR and CTCVR over every row, "
               "CVR over the clicked rows): rows per bin, %d bins per decade on a log scale; "
               "the solid line is the mean score, the dashed one the observed rate "
               "(they coincide when the scores are calibrated on average)."
               % (HIST_BINS // int(HIST_HI - HIST_LO)))


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="Training report of an mtms model (HTML + PNG).")
    ap.add_argument("model")
    ap.add_argument("--samples", help="a sample table or view to evaluate on (test data)")
    ap.add_argument("--out", help="output directory (default ./mtms-report-MODEL)")
    args = ap.parse_args()
    out = os.path.abspath(args.out or "mtms-report-%s" % args.model)
    os.makedirs(out, exist_ok=True)

    try:
        conn = psycopg2.connect("application_name=mtms_report")
    except psycopg2.Error as e:
        sys.exit("mtms_report: cannot connect (PGHOST, PGPORT, PGUSER, PGDATABASE): %s" % e)
    conn.set_session(readonly=True)
    cur = conn.cursor()
    try:
        cur.execute("SET client_min_messages = warning")
        rep = Report(out)
        rep.p("Generated %s from database %s."
              % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), conn.info.dbname))
        scenes, active, previous = model_section(rep, cur, args.model)
        samples = None
        if args.samples:
            samples = query(cur, "SELECT %s::regclass::text", (args.samples,))[0][0]
        curves_section(rep, cur, args.model, active, scenes)
        auc_section(rep, cur, args.model, samples, scenes, active, previous)
        if samples:
            calib, hist, means = score_aggregates(cur, args.model, samples, scenes)
            calibration_section(rep, scenes, calib, samples)
            histogram_section(rep, scenes, hist, means, samples)
        else:
            rep.note("No calibration or score distribution: run with --samples RELATION "
                     "(held-out impressions) to draw them.")
        page = rep.write("mtms training report: model %s, version %d" % (args.model, active[0]))
    except psycopg2.Error as e:
        sys.exit("mtms_report: %s" % str(e).strip())
    finally:
        conn.close()
    print(page)


if __name__ == "__main__":
    main()
