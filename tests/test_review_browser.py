"""End to end with a real ``prodcat review`` process: decisions survive SIGKILL, and in Chromium (Playwright driving
the system's browser; never a downloaded one) two products are relabelled with the keyboard, the page is
reloaded, and the decisions are on disk and on the page."""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _review_data import ReviewInputs, make_inputs
from _review_server import ReviewServer
from prodcat.review.decisions import read_decisions, replay


def chromium() -> str | None:
    """The system Chromium (``PRODCAT_CHROMIUM`` overrides), or None."""
    for candidate in (os.environ.get("PRODCAT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def inputs(demo_catalog: Path, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> ReviewInputs:
    return make_inputs(demo_catalog, tiny_bundle, tmp_path_factory.mktemp("review-e2e"))


def start(inputs: ReviewInputs, decisions: Path) -> ReviewServer:
    args = [str(inputs.catalog), "--model", str(inputs.model), "--audit", str(inputs.audit)]
    return ReviewServer([*args, "--decisions", str(decisions)], log=decisions.with_suffix(".log"))


@pytest.fixture
def server(inputs: ReviewInputs, tmp_path: Path) -> Iterator[ReviewServer]:
    srv = start(inputs, tmp_path / "decisions.csv")
    yield srv
    srv.stop()


def token(srv: ReviewServer) -> str:
    match = re.search(r'name="review-token" content="([^"]+)"', httpx.get(srv.url + "/").text)
    assert match
    return match.group(1)


def test_decisions_survive_sigkill_and_resume(
    server: ReviewServer, inputs: ReviewInputs, tmp_path: Path
) -> None:
    headers = {"Origin": server.url, "X-Review-Token": token(server)}
    items = httpx.get(server.url + "/api/items", params={"size": 3}).json()["items"]
    for it, action in zip(items, ("drop", "keep", "skip"), strict=True):
        r = httpx.post(server.url + "/api/decide", headers=headers,
                       json={"id": it["id"], "action": action, "reviewer": "ana"})  # fmt: skip
        assert r.status_code == 200, r.text
    server.kill()  # no shutdown, no flush at exit: only what each answer had already made durable
    current = replay(read_decisions(tmp_path / "decisions.csv"))
    assert {pid: d.action for pid, d in current.items()} == {it["id"]: a for it, a in
                                                             zip(items, ("drop", "keep", "skip"), strict=True)}  # fmt: skip
    from prodcat.catalog import read_catalog
    from prodcat.review.decisions import apply_decisions

    df = read_catalog(inputs.catalog)[0]  # what `prodcat train --decisions` makes of the server's file
    out, counts = apply_decisions(df, read_decisions(tmp_path / "decisions.csv"))
    assert (counts["dropped"], counts["confirmed"], counts["skipped"]) == (1, 1, 1) and len(out) == len(
        df
    ) - 1
    again = start(inputs, tmp_path / "decisions.csv")
    try:
        page = httpx.get(again.url + "/api/items", params={"size": 3}).json()
        assert page["counts"]["decided"] == 2 and page["counts"]["skipped"] == 1
        assert not {it["id"] for it in items} & {it["id"] for it in page["items"]}  # resumes after them
    finally:
        again.stop()


def test_relabel_two_products_with_the_keyboard_in_chromium(server: ReviewServer, tmp_path: Path) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("no system Chromium (apt-get install chromium, or set PRODCAT_CHROMIUM)")
    expect = sync_api.expect  # waits (the page's CSP forbids the eval behind wait_for_function strings)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(server.url + "/")
            page.wait_for_selector(".item.cur")
            ids = [page.locator(".item").nth(i).get_attribute("data-id") for i in range(2)]
            classes = page.evaluate("JSON.parse(document.getElementById('classes').textContent)")
            chosen = []
            for n, pid in enumerate(ids):
                current = page.locator(".item.cur")
                assert current.get_attribute("data-id") == pid
                given = current.locator(".given").inner_text()
                target = next(c for c in classes if c != given)
                page.keyboard.press("r")
                page.wait_for_selector("#ta-input:focus")
                page.keyboard.type(target[:3])  # type-ahead: a prefix is enough when it is the first match
                assert page.locator("#ta-list li.sel").inner_text() == target
                page.keyboard.press("Enter")
                expect(page.locator("#history li")).to_have_count(n + 1)  # saved, then listed
                chosen.append(target)
            rows = list(csv.DictReader((tmp_path / "decisions.csv").open(encoding="utf-8")))
            assert [(r["id"], r["action"], r["new_label"]) for r in rows] == [
                (pid, "relabel", lab) for pid, lab in zip(ids, chosen, strict=True)
            ]
            page.reload()
            page.wait_for_selector(".item.cur")
            history = page.locator("#history li")
            expect(history).to_have_count(2)
            assert {history.nth(i).get_attribute("data-id") for i in range(2)} == set(ids)
            pending = {page.locator(".item").nth(i).get_attribute("data-id") for i in range(3)}
            assert not pending & set(ids)  # the reviewer resumes after the decided products
            page.select_option("#f-status", "decided")
            expect(page.locator(".item")).to_have_count(2)
            for pid, lab in zip(ids, chosen, strict=True):
                text = page.locator(f'.item[data-id="{pid}"] .decision').inner_text()
                assert f"relabelled → {lab}" in text
            assert "status=decided" in page.url  # the view itself survives a reload too
            page.keyboard.press("u")  # undo: the latest relabel is withdrawn, on disk and on the page
            expect(page.locator("#history li")).to_have_count(3)
            expect(page.locator(f'.item[data-id="{ids[1]}"] .decision')).to_have_text("")
            assert [d.id for d in replay(read_decisions(tmp_path / "decisions.csv")).values()] == [ids[0]]
        finally:
            browser.close()
