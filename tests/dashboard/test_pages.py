"""The dashboard's pages and JSON twins over a real server, on a store filled as workers fill it.

(The browser tests are in test_browser.py.)
"""

from __future__ import annotations

from pathlib import Path

import httpx

from benchmarks.bench_dashboard import _fill, _serve


def test_pages_render_and_match_their_json(tmp_path: Path) -> None:
    dispatcher, identity, _ = _fill(tmp_path, 14)
    url, server = _serve(dispatcher, identity)
    token = (tmp_path / "admin.token").read_text().strip()
    try:
        anon = httpx.get(url + "/", follow_redirects=False)
        assert anon.status_code == 303 and anon.headers["location"] == "/login"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            rows = c.get("/api/v1/dashboard/jobs", params={"state": "failed"}).json()
            assert rows["total"] == 2 and all(j["state"] == "failed" for j in rows["jobs"])
            failed = rows["jobs"][0]["job_id"]
            report = c.get(f"/api/v1/dashboard/jobs/{failed}").json()
            assert report["failure"]["party"] == "shop"
            assert "/data/shop" not in report["failure"]["error"] and "h.csv" in report["failure"]["error"]
            page = c.get(f"/jobs/{failed}").text
            assert 'id="failure"' in page and "<b>shop</b> failed first" in page
            done = c.get("/api/v1/dashboard/jobs", params={"state": "succeeded"}).json()["jobs"][0]["job_id"]
            html = c.get(f"/jobs/{done}").text
            assert 'id="plot-roc"' in html and 'id="plot-ks"' in html and 'id="fed-vs-central"' in html
            wire = c.get(f"/api/v1/dashboard/jobs/{done}/wire").json()
            assert {(p["from"], p["to"]) for p in wire["pairs"]} >= {("bank", "shop"), ("shop", "coord")}
            assert any(r["item"] == "intersection size" for r in wire["ledger"])
            for path in ("/approvals", "/models", "/parties", f"/jobs/{done}/wire", "/static/plotly.min.js"):
                assert c.get(path).status_code == 200, path
    finally:
        server.should_exit = True
