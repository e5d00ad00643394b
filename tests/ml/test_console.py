"""The plain-text tables of `pmx demo` and `pmx models list`: fitted to the terminal, numbers never cut."""

from ml.console import elide_middle, fit_table, shorten_path


def test_elide_middle_keeps_both_ends_and_the_width():
    path = "mlflow/artifacts/rl_agent/4108aa36a28e44599380a03c883da7f1/artifacts/checkpoint/rl_agent.pt"
    for width in (len(path), 40, 17, 2, 1):
        short = elide_middle(path, width)
        assert len(short) == width
    assert elide_middle(path, len(path)) == path
    short = elide_middle(path, 40)
    assert short.startswith("mlflow/artifacts/") and short.endswith("/rl_agent.pt") and "…" in short
    assert elide_middle("short", 40) == "short"


def test_shorten_path_keeps_the_file_and_both_ends_of_the_run_id():
    path = "mlflow/artifacts/rl_agent/4108aa36a28e44599380a03c883da7f1/artifacts/checkpoint/rl_agent.pt"
    assert shorten_path(path, 200) == path
    assert shorten_path(path, 76) == ("mlflow/artifacts/rl_agent/4108aa36…883da7f1/artifacts/checkpoint/"
                                      "rl_agent.pt")
    assert shorten_path(path, 56) == "…/rl_agent/4108…a7f1/artifacts/checkpoint/rl_agent.pt"
    for width in (76, 56, 30, 12):
        assert len(shorten_path(path, width)) <= width
    assert shorten_path(path, 30).endswith("checkpoint/rl_agent.pt")


def test_fit_table_drops_optional_columns_in_order_and_never_cuts_a_cell():
    headers = ["model", "metric", "created", "promoted by"]
    rows = [["rl_agent", "eval reward -142.92", "2026-12-06 04:01", "alice"]]
    wide = fit_table(headers, rows, width=200, right=[1], optional=[2, 3])
    assert wide[1].split("  ")[0] == "rl_agent" and "2026-12-06 04:01" in wide[1] and "alice" in wide[1]
    assert len({len(line) for line in fit_table(headers, rows * 2, width=200)}) <= 2  # padded
    no_date = fit_table(headers, rows, width=50, optional=[2, 3])
    assert "2026-12-06" not in no_date[1] and "alice" in no_date[1]
    bare = fit_table(headers, rows, width=20, optional=[2, 3])
    assert bare == ["model     metric", "rl_agent  eval reward -142.92"]  # wider than 20: never cut
