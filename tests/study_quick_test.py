#!/usr/bin/env python3
"""CPU test of the study pipeline (issue 17): runs `tools/study.py rom_vs_dense --quick` into a
temporary directory with the given moessm program and checks that results.json holds every arm of
the experiment with finite losses for every seed, that the chosen lr is one of the arm's sweep and
that table.md and loss.png were written. Also checks that a second run into the same directory is
refused without --overwrite, that --resume into it reuses every finished run (no training) and
gives the same results, that `rom_routers --quick --resume` beside it reuses the runs its
`shared` arm has in common with rom_vs_dense's `rom` (same settings, other arm name), trains
only the rest and measures each arm's training and decode speed, that --report-only trains
nothing and lists the missing runs as not run; checks the position buckets and
the FLOPs-to-match interpolation on known values, that "extends" inherits and refuses a cycle,
and that a malformed experiment file is refused naming the field.
No timing assertions.   usage: study_quick_test.py MOESSM"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "tools", "study.py")


def check_position_buckets():
    """tools/study.py's octave means of moessm eval's loss_by_position, on known values."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import study
    b = study.position_buckets([1.0, 2.0, 4.0, 6.0, 3.0, None, 5.0])
    assert [(x["from"], x["to"]) for x in b] == [(1, 2), (2, 4), (4, 8)], b
    assert [x["loss"] for x in b] == [1.0, 3.0, 14.0 / 3], b  # the missing position is skipped, not zero
    assert study.position_buckets([]) == []


def check_flops_to_match():
    """tools/study.py's interpolation of the FLOPs a dense ladder needs to reach a target's loss."""
    import study
    lad = [("d1", 100.0, 4.0), ("d2", 400.0, 3.0)]
    r = study.flops_to_match(("moe", 100.0, 3.5), lad)  # halfway in log FLOPs: 200 = 2x
    assert r["status"] == "interpolated" and abs(r["flops"] - 200.0) < 1e-9 and abs(r["ratio"] - 2.0) < 1e-12, r
    r = study.flops_to_match(("moe", 100.0, 4.2), lad)  # worse than the smallest rung
    assert r["status"] == "below the ladder" and r["ratio"] is None and r["at_most"] == 1.0, r
    r = study.flops_to_match(("moe", 100.0, 2.5), lad)  # better than the largest rung
    assert r["status"] == "beyond the ladder" and r["at_least"] == 4.0, r
    assert study.flops_to_match(("moe", 100.0, None), lad)["status"] == "a run is missing"


def main():
    check_position_buckets()
    check_flops_to_match()
    moessm = os.path.abspath(sys.argv[1])
    py = sys.executable
    tmp = tempfile.mkdtemp(prefix="moessm_study_test_")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    env.setdefault("OMP_WAIT_POLICY", "passive")
    try:
        argv = [py, STUDY, "rom_vs_dense", "--quick", "--out", tmp, "--moessm", moessm]
        p = subprocess.run(argv, env=env)
        assert p.returncode == 0, f"study.py exited {p.returncode}"
        d = os.path.join(tmp, "rom_vs_dense_quick")
        for f in ("results.json", "table.md", "loss.png"):
            assert os.path.isfile(os.path.join(d, f)) and os.path.getsize(os.path.join(d, f)) > 0, f"{f} missing"
        with open(os.path.join(d, "loss.png"), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", "loss.png is not a PNG"
        with open(os.path.join(d, "results.json")) as fh:
            res = json.load(fh)
        with open(os.path.join(ROOT, "configs", "study", "rom_vs_dense.json")) as fh:
            exp = json.load(fh)
        assert res["quick"] is True
        seeds = exp["quick"]["seeds"]
        assert set(res["arms"]) == {a["name"] for a in exp["arms"]}, sorted(res["arms"])
        for name, arm in res["arms"].items():
            assert arm["failed_runs"] == 0, name
            assert arm["chosen_lr"] in exp["quick"]["arms"][name]["lr"], (name, arm["chosen_lr"])
            assert len(arm["lr_sweep"]) == len(exp["quick"]["arms"][name]["lr"]), name
            assert [s["seed"] for s in arm["seeds"]] == seeds, (name, arm["seeds"])
            for s in arm["seeds"]:
                assert s["ok"] and math.isfinite(s["val_loss"]) and s["val_loss"] > 0, (name, s)
                for c in exp["quick"]["eval"]["ctx"]:
                    assert math.isfinite(s["eval"][str(c)]["loss"]), (name, c, s)
            assert arm["summary"]["val_loss"]["n"] == len(seeds), name
            acc = arm["accounting"]
            assert acc["active_params"] > 0 and acc["fwd_flops"] > 0, acc
        assert all(m["ok"] for m in res["matching"]) and len(res["matching"]) == 2, res["matching"]
        with open(os.path.join(d, "table.md"), encoding="utf-8") as fh:
            table = fh.read()
        assert "QUICK" in table and all(f"| {a['name']} |" in table for a in exp["arms"]), table
        # a second run into the same directory is refused without --overwrite (before any training)
        p = subprocess.run(argv, env=env, stderr=subprocess.PIPE, text=True)
        assert p.returncode != 0 and "--overwrite" in p.stderr and "--resume" in p.stderr, p.stderr
        # --resume reuses every finished run (each was recorded under done/) and reproduces the results
        n_done = len(os.listdir(os.path.join(d, "done")))
        assert n_done >= len(exp["arms"]), n_done
        p = subprocess.run(argv + ["--resume"], env=env, stderr=subprocess.PIPE, text=True)
        assert p.returncode == 0, f"--resume exited {p.returncode}: {p.stderr[-2000:]}"
        assert f"({n_done} runs reused)" in p.stderr, p.stderr[-2000:]
        with open(os.path.join(d, "results.json")) as fh:
            res2 = json.load(fh)
        for name in res["arms"]:
            a, b = res["arms"][name], res2["arms"][name]
            assert a["chosen_lr"] == b["chosen_lr"], name
            assert [s["val_loss"] for s in a["seeds"]] == [s["val_loss"] for s in b["seeds"]], name
        # another experiment under the same root reuses the runs it shares (shared == rom here)
        p = subprocess.run([py, STUDY, "rom_routers", "--quick", "--resume", "--out", tmp, "--moessm", moessm],
                           env=env, stderr=subprocess.PIPE, text=True)
        assert p.returncode == 0, f"rom_routers --quick exited {p.returncode}: {p.stderr[-2000:]}"
        with open(os.path.join(ROOT, "configs", "study", "rom_routers.json")) as fh:
            q = json.load(fh)["quick"]
        n_shared = len(q["arms"]["shared"]["lr"]) + len(q["seeds"]) - 1
        assert f"({n_shared} runs reused)" in p.stderr, p.stderr[-2000:]
        with open(os.path.join(tmp, "rom_routers_quick", "results.json")) as fh:
            rr = json.load(fh)
        rom_runs = {(s["lr"], s["seed"]): s["val_loss"] for s in res["arms"]["rom"]["seeds"]}
        for s in rr["arms"]["shared"]["seeds"]:
            assert rom_runs.get((s["lr"], s["seed"])) == s["val_loss"], (s, rom_runs)
        assert all(s["ok"] for s in rr["arms"]["independent"]["seeds"]), rr["arms"]["independent"]
        # rom_routers measures speed (one process at a time): finite rates, the baseline's ratio is 1
        sp = rr["speed"]["arms"]
        assert set(sp) == {"shared", "independent"}, sp
        for n, r in sp.items():
            assert r["train_tokens_per_s"] > 0 and r["decode_ms_per_token"] > 0, (n, r)
        assert sp["shared"]["train_tokens_per_s_ratio"] == 1.0 and sp["shared"]["decode_ms_per_token_ratio"] == 1.0, sp
        # --report-only trains nothing: rom_weight_at's `gate` arm is rom's runs, the rest are "not run yet"
        p = subprocess.run([py, STUDY, "rom_weight_at", "--quick", "--report-only", "--out", tmp, "--moessm", moessm],
                           env=env, stderr=subprocess.PIPE, text=True)
        assert p.returncode == 0, f"--report-only exited {p.returncode}: {p.stderr[-2000:]}"
        with open(os.path.join(tmp, "rom_weight_at_quick", "results.json")) as fh:
            rw = json.load(fh)
        assert rw["runs_reused"] == n_shared and rw["runs_not_run"] > 0, (rw["runs_reused"], rw["runs_not_run"])
        assert not os.path.isdir(os.path.join(tmp, "rom_weight_at_quick", "runs", "out")), "a run was trained"
        with open(os.path.join(tmp, "rom_weight_at_quick", "table.md"), encoding="utf-8") as fh:
            assert "not run yet" in fh.read()
        # "extends": the named experiment's fields, replaced whole by this file's; a cycle is refused
        ext_path = os.path.join(tmp, "ext_exp.json")
        with open(ext_path, "w") as fh:
            json.dump({"extends": "rom_vs_dense", "seeds": [7, 8, 9]}, fh)
        import study  # on sys.path since check_position_buckets
        ext = study.load_experiment(ext_path, False)
        assert ext["seeds"] == [7, 8, 9] and [a["name"] for a in ext["arms"]] == [a["name"] for a in exp["arms"]], ext
        with open(ext_path, "w") as fh:
            json.dump({"extends": ext_path}, fh)
        p = subprocess.run([py, STUDY, ext_path, "--check", "--moessm", moessm], env=env, stderr=subprocess.PIPE, text=True)
        assert p.returncode != 0 and "ext_exp.json" in p.stderr and "extends" in p.stderr and "cycle" in p.stderr, p.stderr
        # a malformed experiment is refused naming the file and the field
        bad = dict(exp)
        bad["arms"] = [dict(exp["arms"][0], lr=[])]
        bad_path = os.path.join(tmp, "bad_exp.json")
        with open(bad_path, "w") as fh:
            json.dump(bad, fh)
        p = subprocess.run([py, STUDY, bad_path, "--check", "--moessm", moessm], env=env,
                           stderr=subprocess.PIPE, text=True)
        assert p.returncode != 0 and "bad_exp.json" in p.stderr and "arms[0].lr" in p.stderr, p.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("study quick test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
