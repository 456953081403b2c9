"""The decisions file: parsing with errors naming the rows, replay with undo, durability of the log (a torn last row,
a second writer) and ``apply_decisions`` / ``prodcat train --decisions``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from prodcat.review.decisions import (
    COLUMNS,
    Decision,
    DecisionLog,
    DecisionsError,
    apply_decisions,
    parse_decisions,
    replay,
)

HEADER = ",".join(COLUMNS)
T = "2026-12-02T01:00:00+00:00"


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def catalog() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "title": ["red shirt", "blue jeans", "watch", "bag"],
            "description": ["", "", "", ""],
            "image": [None] * 4,
            "label": ["Shirts", "Jeans", "Watches", "Bags"],
            "master": ["Apparel", "Apparel", "Accessories", "Accessories"],
        }
    )


def test_parse_replay_and_undo() -> None:
    events = parse_decisions(
        csv_text(
            f"{T},ana,a,relabel,Shirts,Jeans,mislabel",
            f"{T},ana,b,drop,Jeans,,review",
            f"{T},ana,b,undo,Jeans,,review",
            f"{T},bo,c,skip,Watches,,review",
            f"{T},bo,a,relabel,Shirts,Bags,mislabel",
            f"{T},bo,a,undo,Shirts,Bags,mislabel",
        )
    )
    assert [e.line for e in events] == [2, 3, 4, 5, 6, 7]
    current = replay(events)
    assert set(current) == {"a", "c"}  # b's drop was withdrawn
    assert (current["a"].new_label, current["a"].reviewer) == ("Jeans", "ana")  # back to ana's relabel
    assert current["c"].action == "skip"


def test_bad_rows_are_named_by_line() -> None:
    text = csv_text(
        f"{T},ana,a,relabel,Shirts,,x",  # line 2: relabel without a label
        f"{T},ana,,keep,Shirts,Shirts,x",  # line 3: no id
        "yesterday,ana,b,keep,Jeans,Jeans,x",  # line 4: bad time
        f"{T},ana,c,rename,Watches,Bags,x",  # line 5: unknown action
        f"{T},ana,d,drop,Bags,Shoes,x",  # line 6: drop with a label
        f"{T},ana,d,undo,Bags,,x",  # line 7: nothing to undo
    )
    with pytest.raises(DecisionsError) as err:
        parse_decisions(text, source="D.csv")
    msg = str(err.value)
    assert msg.startswith("D.csv: 6 bad row(s)")
    for line, words in [(2, "needs a new_label"), (3, "empty id"), (4, "ISO 8601"), (5, "rename"), (6, "drop takes"),
                        (7, "no decision to withdraw")]:  # fmt: skip
        assert f"line {line}: " in msg and words in msg


def test_missing_columns_are_named() -> None:
    with pytest.raises(DecisionsError, match=r"missing column.*action"):
        parse_decisions("time,reviewer,id,old_label,new_label\n")


def test_apply_relabels_drops_and_counts() -> None:
    events = parse_decisions(
        csv_text(
            f"{T},ana,a,relabel,Shirts,Jeans,mislabel",  # relabelled; its parent follows the new leaf
            f"{T},ana,b,keep,Jeans,Jeans,review",
            f"{T},ana,c,drop,Watches,,review",
            f"{T},ana,d,accept,Bags,Bags,review",  # accept of the given label: confirmed
        )
    )
    out, counts = apply_decisions(catalog(), events, taxonomy_columns=["master"])
    assert counts == {"decisions": 4, "products": 4, "relabelled": 1, "dropped": 1, "confirmed": 2,
                      "already_applied": 0, "skipped": 0}  # fmt: skip
    assert out["id"].tolist() == ["a", "b", "d"]
    assert out.loc[out["id"] == "a", "label"].item() == "Jeans"
    # applying again to the corrected catalog changes nothing and says so
    again, counts2 = apply_decisions(out, events[:2], taxonomy_columns=["master"])
    assert counts2["already_applied"] == 1 and counts2["relabelled"] == 0
    pd.testing.assert_frame_equal(again, out)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (f"{T},ana,zz,keep,Shirts,Shirts,x", "line 2: product 'zz' is not in the catalog"),
        (f"{T},ana,a,relabel,Shirts,Shoes,x", "line 2: new label 'Shoes' is not a class"),
        (f"{T},ana,a,relabel,Watches,Jeans,x", "line 2: product 'a' is labelled 'Shirts'"),
    ],
)
def test_apply_refuses_decisions_that_do_not_fit_the_catalog(row: str, words: str) -> None:
    with pytest.raises(DecisionsError, match=words):
        apply_decisions(catalog(), parse_decisions(csv_text(row)))


def test_log_appends_durably_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "D.csv"
    log = DecisionLog(path)
    log.append(Decision(T, "ana", "a", "relabel", "Shirts", "Jeans", "mislabel"))
    stored = log.append(Decision(T, "ana", "a", "undo", "Shirts", "Jeans", "mislabel"))
    assert stored.line == 3
    with pytest.raises(DecisionsError, match="no decision to withdraw"):
        log.append(Decision(T, "ana", "a", "undo", "Shirts", "Jeans", "mislabel"))
    with pytest.raises(DecisionsError, match="open in another prodcat review"):
        DecisionLog(path)  # a second writer is refused while the first holds the file
    log.close()
    assert path.read_text().splitlines()[0] == HEADER
    again = DecisionLog(path)
    assert [e.action for e in again.events] == ["relabel", "undo"]
    again.close()


def test_formula_like_cells_are_quoted_in_the_file_and_read_back_unchanged(tmp_path: Path) -> None:
    """A cell a spreadsheet would run (``=``, ``+``, ``-``, ``@``: CSV injection) gets a leading quote on disk;
    reading strips it, so labels, ids and reviewers come back exactly as given."""
    path = tmp_path / "D.csv"
    log = DecisionLog(path)
    evil = '=HYPERLINK("http://x.example","click")'
    log.append(Decision(T, "@mallory", "-17", "relabel", "+Shirts", evil, "'quoted"))
    log.close()
    cells = path.read_text().splitlines()[1]
    for raw in ("'@mallory", "'-17", "'+Shirts", "'=HYPERLINK", "''quoted"):
        assert raw in cells
    (event,) = DecisionLog(path).events
    assert (event.reviewer, event.id, event.old_label, event.new_label, event.reason) == (
        "@mallory", "-17", "+Shirts", evil, "'quoted",
    )  # fmt: skip


def test_a_torn_last_row_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "D.csv"
    path.write_text(csv_text(f"{T},ana,a,relabel,Shirts,Jeans,x") + f"{T},ana,b,rel")  # killed mid-write
    log = DecisionLog(path)
    assert [e.id for e in log.events] == ["a"]
    log.append(Decision(T, "ana", "b", "drop", "Jeans", None, "x"))
    log.close()
    assert [e.id for e in DecisionLog(path).events] == ["a", "b"]
    assert (tmp_path / "D.csv.torn").read_text() == f"{T},ana,b,rel\n"
    # a complete last row without its newline (edited by hand) is kept
    shutil.copy(path, tmp_path / "E.csv")
    e = tmp_path / "E.csv"
    e.write_text(e.read_text() + f"{T},ana,c,skip,Watches,,x")
    assert [d.id for d in DecisionLog(e).events] == ["a", "b", "c"]


def test_train_applies_decisions_and_reports_them(demo_catalog: Path, tmp_path: Path) -> None:
    from prodcat.catalog import read_catalog
    from prodcat.cli import app

    df = read_catalog(demo_catalog)[0]
    first, second, third = df.iloc[0], df.iloc[1], df.iloc[2]
    other = sorted(set(df["label"]) - {first["label"]})[0]
    decisions = tmp_path / "D.csv"
    decisions.write_text(
        csv_text(
            f"{T},ana,{first['id']},relabel,{first['label']},{other},mislabel",
            f"{T},ana,{second['id']},drop,{second['label']},,review",
            f"{T},ana,{third['id']},keep,{third['label']},{third['label']},review",
        )
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        "text_models: [{name: tfidf}]\nimage_models: []\nn_folds: 3\nvalidation_fraction: 0\n"
        "fusion: {method: mean}\ncalibration: {enabled: false}\ncache_dir: null\n"
    )
    runner = CliRunner()
    args = ["train", str(demo_catalog), "--out", str(tmp_path / "m"), "-c", str(config)]
    result = runner.invoke(app, [*args, "--decisions", str(decisions)])
    assert result.exit_code == 0, result.output
    assert "1 relabelled, 1 dropped, 1 confirmed" in result.output
    assert f"trained on {len(df) - 1} products" in result.output
    decisions.write_text(csv_text(f"{T},ana,{first['id']},relabel,{first['label']},No Such Class,x"))
    bad = runner.invoke(app, [*args, "--decisions", str(decisions)])
    assert bad.exit_code == 2
    assert "line 2: new label 'No Such Class' is not a class" in bad.output
