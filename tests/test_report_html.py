"""report.html in a real browser: headless Chromium loads the page of a
planning run with no console error, and every chart has data."""

import json
import os

import pytest

import headless_browser

CHROMIUM = headless_browser.find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
CHARTS = "document.body.getAttribute('data-charts')"


@needs_chromium
def test_report_html_loads_without_errors_and_every_chart_has_data(planning_run):
  workdir, _, _ = planning_run
  path = os.path.join(workdir, "report.html")
  got = headless_browser.load("file://" + path, CHARTS, CHROMIUM)
  assert got["errors"] == []
  charts = json.loads(got["value"])
  report = json.load(open(os.path.join(workdir, "report.json")))
  trials = sum(n for n in report["outcomes"].values())
  assert charts["history"] == trials  # every trial, failures included
  assert charts["importance"] == len(report["designer"]["importances"])
  assert charts["breakdown"] == len(report["best"]["breakdown"])
  assert charts["parallel"] > 0 and charts["fidelity-analytic"] > 0
  assert all(n > 0 for n in charts.values()), charts


@needs_chromium
def test_the_browser_check_sees_a_broken_page(tmp_path):
  page = tmp_path / "broken.html"
  page.write_text("<html><body><script>console.error('boom'); notDefined();</script></body></html>")
  got = headless_browser.load("file://" + str(page), "1 + 1", CHROMIUM)
  assert got["value"] == 2
  assert "boom" in got["errors"][0] and "notDefined" in got["errors"][1]


def test_report_html_is_self_contained(planning_run):
  workdir, _, _ = planning_run
  text = open(os.path.join(workdir, "report.html"), encoding="utf-8").read()
  assert "<svg" in text and "<script>" in text
  for needle in ("src=", "href=", "http://", "https://", "@import"):
    assert needle not in text, needle
