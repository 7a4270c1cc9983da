#!/usr/bin/env python3
"""Deterministic test data for the benchmarks.

  generate.py archive EVENTS        NDJSON webhooks (canonical lines) on stdout:
                                    ~EVENTS/2.5 tasks, each created, some edited,
                                    completed or deleted; 5 % duplicates; shuffled
                                    within a window of 2,000 lines, so updates do
                                    arrive before their created.
  generate.py timeordered EVENTS [hours|days]
                                    NDJSON webhooks as senders send them: each
                                    task's events at their own times (created;
                                    a quarter edited; half completed 1 s-1 h
                                    later; 3/8 deleted 1-2 h later; with "days",
                                    completed 1-3 days and deleted 3-7 days
                                    later), the stream in timestamp order with
                                    +-5 minutes of jitter, 5 % duplicates (a
                                    retry up to 5 minutes after its original).
  generate.py taskrows ROWS         the same kind of rows as meetperry.task holds,
                                    as COPY text (external_id, user_id, content,
                                    created_date, completed_date, deleted_date).
  generate.py reportrows TASKS USERS END
                                    task rows for the reporter benchmark: over
                                    USERS users, a mix of new, completed, old
                                    and deleted tasks around the hour before END
                                    (Unix seconds).
  generate.py windowed TASKS USERS END ONTIME LATE [PER_WINDOW]
                                    for the reporter's corrections: 25 one-minute
                                    windows ending at END, PER_WINDOW (10,000)
                                    events in each (creations, completions,
                                    deletions, edits) over old tasks and new, up
                                    to TASKS tasks over USERS users, written to
                                    the file ONTIME; and to the file LATE, 1 % of a
                                    window's events: completions and deletions of
                                    old tasks timestamped in the first 24 windows.
"""
import random
import sys
from datetime import datetime, timezone

BASE = 1_760_000_000  # 2025-10-09


def ts(seconds):
    whole = int(seconds)
    micros = int(round((seconds - whole) * 1_000_000))
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % micros


def line(event, at, user, task, content, done):
    return ('{"event":"%s","timestamp":"%s","metadata":{"userId":"%s","id":"%s","content":"%s","isCompleted":%s},'
            '"receivedAt":"%s"}\n' % (event, ts(at), user, task, content, "true" if done else "false", ts(at + 0.25)))


def archive(total):
    rng = random.Random(42)
    tasks = int(total / 2.5)
    events = []
    for i in range(tasks):
        user = "user%d" % rng.randrange(10_000)
        task = "task-%07d" % i
        t0 = BASE + i * 0.05
        content = "Buy milk, eggs and bread for the weekend #%d" % i
        events.append(line("created", t0, user, task, content, False))
        t = t0
        if rng.random() < 0.5:
            t += rng.uniform(1, 600)
            events.append(line("updated", t, user, task, content + " (edited)", False))
            content += " (edited)"
        if rng.random() < 0.5:
            t += rng.uniform(1, 600)
            events.append(line("updated", t, user, task, content, True))
        if rng.random() < 0.375:
            t += rng.uniform(1, 600)
            events.append(line("deleted", t, user, task, content, False))
    duplicates = [rng.choice(events) for _ in range(len(events) // 19)]  # 5 % of the result
    events += duplicates
    # Roughly in order of creation, shuffled within a window.
    keyed = sorted(((i + rng.uniform(0, 2000) if i < len(events) - len(duplicates) else rng.uniform(0, len(events)), e)
                    for i, e in enumerate(events)), key=lambda p: p[0])
    out = sys.stdout
    for _, e in keyed[:total]:
        out.write(e)


def timeordered(total, spacing="hours"):
    rng = random.Random(15)
    per_task = (1 + 0.25 + 0.5 + 0.375) * 1.05
    tasks = int(total / per_task)
    timed = []  # (arrival, line)
    for i in range(tasks):
        user = "user%d" % rng.randrange(10_000)
        task = "task-%07d" % i
        t0 = BASE + i * 0.05
        content = "Buy milk, eggs and bread for the weekend #%d" % i
        events = [(t0, line("created", t0, user, task, content, False))]
        if rng.random() < 0.25:
            t = t0 + rng.uniform(1, 600)
            content += " (edited)"
            events.append((t, line("updated", t, user, task, content, False)))
        if rng.random() < 0.5:
            t = t0 + (rng.uniform(1, 3600) if spacing == "hours" else rng.uniform(86_400, 3 * 86_400))
            events.append((t, line("updated", t, user, task, content, True)))
        if rng.random() < 0.375:
            t = t0 + (rng.uniform(3600, 7200) if spacing == "hours" else rng.uniform(3 * 86_400, 7 * 86_400))
            events.append((t, line("deleted", t, user, task, content, False)))
        for t, e in events:
            timed.append((t + rng.uniform(-300, 300), e))
            if rng.random() < 0.05:
                timed.append((t + rng.uniform(0, 300), e))
    timed.sort(key=lambda p: p[0])
    out = sys.stdout
    for _, e in timed[:total]:
        out.write(e)


def taskrows(total):
    rng = random.Random(7)
    out = sys.stdout
    for i in range(total):
        t0 = BASE + i * 0.05
        completed = ts(t0 + rng.uniform(1, 600)) if rng.random() < 0.5 else "\\N"
        deleted = ts(t0 + rng.uniform(600, 1200)) if rng.random() < 0.375 else "\\N"
        out.write("task-%07d\tuser%d\tBuy milk, eggs and bread for the weekend #%d\t%s\t%s\t%s\n"
                  % (i, rng.randrange(10_000), i, ts(t0), completed, deleted))


def reportrows(total, users, end):
    """Tasks spread over the 30 days before END; a quarter touch the last hour."""
    rng = random.Random(9)
    out = sys.stdout
    start = end - 3600
    for i in range(total):
        kind = rng.random()
        if kind < 0.25:      # new in the window
            created = rng.uniform(start, end)
        else:                # old
            created = end - rng.uniform(3600, 30 * 86400)
        completed = deleted = "\\N"
        r = rng.random()
        if r < 0.3:
            completed = ts(rng.uniform(max(created, start), end) if rng.random() < 0.5 else rng.uniform(created, max(created, start)))
        elif r < 0.45:
            deleted = ts(rng.uniform(max(created, start), end) if rng.random() < 0.5 else rng.uniform(created, max(created, start)))
        out.write("t%07d\tu%05d\tTask number %d: water the plants\t%s\t%s\t%s\n"
                  % (i, rng.randrange(users), i, ts(created), completed, deleted))


def windowed(tasks, users, end, ontime_path, late_path, per_window=10_000, windows=25, width=60):
    rng = random.Random(11)
    first = end - windows * width
    new_per_window = per_window * 6 // 10
    old = max(0, tasks - windows * new_per_window)
    out = open(ontime_path, "w")
    # (task, user, content, created) of tasks neither completed nor deleted
    alive = []
    def create(i, at):
        user, task = "u%05d" % rng.randrange(users), "t%07d" % i
        content = "Task number %d: water the plants" % i
        out.write(line("created", at, user, task, content, False))
        return (task, user, content, at)
    def take():
        k = rng.randrange(len(alive))
        alive[k], alive[-1] = alive[-1], alive[k]
        return alive.pop()
    for i in range(old):
        alive.append(create(i, first - rng.uniform(60, 30 * 86400)))
    next_id = old
    for w in range(windows):
        start = first + w * width
        created = [create(next_id + k, rng.uniform(start, start + width)) for k in range(new_per_window)]
        next_id += new_per_window
        for kind, share in (("completed", 2), ("deleted", 1), ("edited", 1)):
            for _ in range(per_window * share // 10):
                task, user, content, _at = take() if kind != "edited" else alive[rng.randrange(len(alive))]
                at = rng.uniform(start, start + width)
                if kind == "completed":
                    out.write(line("updated", at, user, task, content, True))
                elif kind == "deleted":
                    out.write(line("deleted", at, user, task, content, False))
                else:
                    out.write(line("updated", at, user, task, content + " (edited)", False))
        alive.extend(created)
    out.close()
    # Late: completions and deletions of old tasks, timestamped in the first 24 windows.
    late = open(late_path, "w")
    for _ in range(per_window // 100):
        at = rng.uniform(first, first + (windows - 1) * width)
        task, user, content, created = alive[rng.randrange(len(alive))]
        while created >= at:
            task, user, content, created = alive[rng.randrange(len(alive))]
        if rng.random() < 0.7:
            late.write(line("updated", at, user, task, content, True))
        else:
            late.write(line("deleted", at, user, task, content, False))
    late.close()


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "archive":
        archive(int(sys.argv[2]))
    elif what == "timeordered":
        timeordered(int(sys.argv[2]), *sys.argv[3:4])
    elif what == "taskrows":
        taskrows(int(sys.argv[2]))
    elif what == "reportrows":
        reportrows(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif what == "windowed":
        windowed(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6],
                 *(int(a) for a in sys.argv[7:8]))
    else:
        sys.exit(__doc__)
