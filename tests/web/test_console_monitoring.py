"""Monitoring in the console, in a real Chromium, on a server of its own that collects every
second: charts on the overview, a node, a GPU and a job, with the time range picker; the alerts
page, where an administrator sees a simulated over-temperature fire, silences it and edits a
rule, and where members only read. Screenshots of the pages in both languages go to
test-artifacts/ (node-*, gpu-*, alerts-*, overview-charts-*)."""

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browsing import accept_dialogs, log_in, new_context, screenshot
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from suanli.client import Client

if TYPE_CHECKING:
    from tests.conftest import RunningServer

ROOT_CONFTEST = Path(__file__).parents[1] / "conftest.py"
OVERRIDES = "simulated-gpu-telemetry.json"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator["RunningServer"]:
    """This module's server: four simulated A100s, telemetry collected every second (the
    shared console server collects every 10 s, too slow to watch charts fill)."""
    root = request.config.pluginmanager.get_plugin(str(ROOT_CONFTEST))
    base = tmp_path_factory.mktemp("monitoring")
    url = root._create_postgres_database() if root.POSTGRES_URL else f"sqlite:///{base / 'db'}"
    env = {
        "SUANLI_SIMULATED_GPUS": root.SIMULATED_A100S,
        "SUANLI_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
        "SUANLI_METRICS_INTERVAL_SECONDS": "1",
    }
    running = root.start_server(base / "data", url, env)
    yield running
    running.stop()


@pytest.fixture(scope="module", autouse=True)
def lab(admin_api: Client) -> Iterator[dict[str, object]]:
    """A project with one long job on one GPU, so that the charts have a busy GPU beside three
    idle ones."""
    project = unique("lab")
    admin_api.projects.create(project)
    job = admin_api.jobs.submit(
        {
            "project": project,
            "name": "train-busy",
            "command": ["sleep", "600"],
            "resources": {"gpus": 1, "cpus": 0.25, "memory": "1Gi"},
        }
    )
    wait_for(lambda: admin_api.jobs.get(job.id).state == "running")
    yield {"project": project, "busy_job": job.id}
    admin_api.jobs.cancel(job.id)


def wait_for(check: Callable[[], object], timeout: float = 40) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError("timed out")


def admin_page(context: BrowserContext) -> Page:
    page = context.new_page()
    log_in(page)
    return page


def expect_drawn(chart: Locator) -> None:
    """uPlot drew the chart: its canvas is there and the chart has data."""
    expect(chart.locator(".u-wrap canvas").first).to_be_attached()
    expect(chart).to_have_attribute("data-state", "drawn")


def expect_all_drawn(page: Page) -> None:
    charts = page.locator("figure[data-chart]:not([data-optional])")
    assert charts.count() > 0
    for index in range(charts.count()):
        expect_drawn(charts.nth(index))


def reload_until(page: Page, locator: Locator, count: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while locator.count() != count:
        assert time.monotonic() < deadline, f"{locator} never counted {count}"
        time.sleep(1)
        page.reload()


def set_override(console: "RunningServer", values: dict) -> None:
    (console.data_dir / OVERRIDES).write_text(json.dumps(values))


def test_charts_say_when_there_is_no_data_or_why_they_failed(context: BrowserContext) -> None:
    page = admin_page(context)

    def empty(route) -> None:
        answer = {"start": "", "end": "", "step": 10, "unit": "percent", "series": []}
        route.fulfill(json=answer)

    page.route("**/charts/query?metric=gpu_utilization_percent*", empty)
    page.route(
        "**/charts/query?metric=gpu_power_watts*",
        lambda route: route.fulfill(
            status=422, json={"status": 422, "detail": "range: too long", "errors": {}}
        ),
    )
    page.goto("/")
    utilisation = page.locator("[data-test=chart-gpu-utilization]")
    expect(utilisation).to_have_attribute("data-state", "empty")
    expect(utilisation.locator(".chart-note")).to_have_text(re.compile("^No data yet"))
    power = page.locator("[data-test=chart-gpu-power]")
    expect(power).to_have_attribute("data-state", "failed")
    expect(power.locator(".chart-note")).to_contain_text("range: too long")


def test_an_admin_watches_an_over_temperature_fire_silences_it_and_edits_the_rule(
    context: BrowserContext, browser: Browser, console, admin_api: Client
) -> None:
    page = admin_page(context)
    page.click("nav >> text=Alerts")
    expect(page).to_have_url(re.compile(r"/alerts$"))
    expect(page.locator("[data-test=calm]")).to_be_visible()
    rule = page.locator("tr[data-rule='GPU temperature high']")
    rule_id = (rule.get_attribute("id") or "").removeprefix("rule-")
    # A threshold that is no number is refused by that field, and nothing is saved.
    rule.locator("input[name=threshold]").fill("hot")
    rule.locator("input[name=for_seconds]").fill("1s")
    rule.locator(f"[data-test=save-rule-{rule_id}]").click()
    rule = page.locator("tr[data-rule='GPU temperature high']")
    expect(rule.locator(f"#err-rule-{rule_id}-threshold")).to_have_text("Must be a number.")
    expect(rule.locator("input[name=threshold]")).to_have_attribute("aria-invalid", "true")
    expect(rule.locator("input[name=threshold]")).to_have_value("hot")
    # 90 °C: above the 82 °C of a busy simulated A100, below the 93 °C made up here.
    rule.locator("input[name=threshold]").fill("90")
    rule.locator(f"[data-test=save-rule-{rule_id}]").click()
    expect(page.locator(".flash")).to_contain_text("Alert rule saved")
    rule = page.locator("tr[data-rule='GPU temperature high']")
    expect(rule.locator("input[name=threshold]")).to_have_value("90")
    expect(rule.locator("input[name=for_seconds]")).to_have_value("1s")
    uuid = admin_api.nodes.list()[0].gpus[0].uuid
    set_override(console, {uuid: {"gpu_temperature_celsius": 93}})
    try:
        # The firing list refreshes itself every 10 s.
        firing = page.locator("#firing tr[data-event]")
        expect(firing).to_have_count(1, timeout=40_000)
        expect(firing).to_contain_text("GPU temperature high")
        expect(firing).to_contain_text("93 °C")
        expect(firing.locator("[data-severity=critical]")).to_be_visible()
        expect(firing.locator(f"a[href='/gpus/{uuid}']")).to_be_visible()
        page.locator("#firing button[data-test^=silence-]").click()
        expect(page.locator(".flash")).to_contain_text("Silence created")
        silence = page.locator("[data-test=silences] tr[data-silence]").first
        expect(silence).to_contain_text("alertname=GPU temperature high")
        expect(silence).to_contain_text(f"uuid={uuid}")
        expect(silence).not_to_contain_text("gpu=")
        expect(silence).to_contain_text("active")
        expect(page.locator("#firing [data-test=muted]")).to_be_visible()
        screenshot(page, "alerts-en")
        chinese = new_context(browser, console, locale="zh-CN")
        zh = admin_page(chinese)
        zh.goto("/alerts")
        expect(zh.locator("h1")).to_have_text("告警")
        expect(zh.locator("#firing")).to_contain_text("GPU 温度过高")
        expect(zh.locator("#firing")).to_contain_text("静默至")
        screenshot(zh, "alerts-zh-CN")
        chinese.close()
        # An administrator may end a silence early.
        page.locator("[data-test=silences] button[data-test^=end-silence-]").first.click()
        expect(page.locator(".flash")).to_contain_text("Silence ended")
        expect(page.locator("[data-test=silences] tr[data-silence]").first).to_contain_text("ended")
    finally:
        set_override(console, {})
    resolved = page.locator("#history [data-alert-state=resolved]")
    reload_until(page, resolved, 1)
    expect(page.locator("#history tr[data-event]").first).to_contain_text("93 °C")
    expect(page.locator("[data-test=calm]")).to_be_visible()


def test_an_admin_creates_a_rule_disables_enables_and_deletes_it(context: BrowserContext) -> None:
    page = admin_page(context)
    page.goto("/alerts")
    asked = accept_dialogs(page)
    editor = page.locator("[data-test=rule-editor]")
    editor.locator("summary").click()
    editor.locator("input[name=name]").fill("Node memory high")
    editor.locator("select[name=metric]").select_option("node_memory_percent")
    editor.locator("input[name=threshold]").fill("95")
    editor.locator("input[name=for_seconds]").fill("soon")
    editor.locator("[data-test=create-rule]").click()
    editor = page.locator("[data-test=rule-editor]")
    expect(editor).to_have_attribute("open", "")
    expect(editor.locator("#err-new_rule-for_seconds")).to_have_text("Must be a number.")
    expect(editor.locator("input[name=name]")).to_have_value("Node memory high")
    editor.locator("input[name=for_seconds]").fill("2m")
    editor.locator("textarea[name=match]").fill("node")
    editor.locator("[data-test=create-rule]").click()
    expect(page.locator("#err-new_rule-match")).to_have_text("Line 1 is not key=value.")
    page.locator("[data-test=rule-editor] textarea[name=match]").fill("mount=data\n")
    page.locator("[data-test=rule-editor] [data-test=create-rule]").click()
    expect(page.locator(".flash")).to_contain_text("Alert rule created")
    rule = page.locator("tr[data-rule='Node memory high']")
    expect(rule).to_contain_text("node_memory_percent")
    expect(rule.locator("input[name=for_seconds]")).to_have_value("2m")
    rule.locator("button[value=disable]").click()
    rule = page.locator("tr[data-rule='Node memory high']")
    expect(rule.locator(".badge")).to_have_text("disabled")
    rule.locator("button[value=enable]").click()
    rule = page.locator("tr[data-rule='Node memory high']")
    expect(rule.locator(".badge")).to_have_text("enabled")
    rule.locator("button[value=delete]").click()
    expect(page.locator(".flash")).to_contain_text("Alert rule deleted")
    expect(page.locator("tr[data-rule='Node memory high']")).to_have_count(0)
    assert asked and "Node memory high" in asked[0]


def test_an_admin_creates_a_robot_channel_its_token_hidden_then_deletes_it(
    context: BrowserContext,
) -> None:
    page = admin_page(context)
    page.goto("/alerts")
    editor = page.locator("[data-test=channel-editor]")
    editor.locator("summary").click()
    # E-mail settings only show for e-mail.
    expect(editor.locator("[data-kind-only=email]")).to_be_hidden()
    editor.locator("select[name=kind]").select_option("email")
    expect(editor.locator("[data-kind-only=email]")).to_be_visible()
    editor.locator("select[name=kind]").select_option("dingtalk")
    editor.locator("input[name=name]").fill("ops-robot")
    editor.locator("input[name=url]").fill("ftp://robot.example.org/send")
    editor.locator("input[name=secret]").fill("SEC-signing-secret")
    editor.locator("[data-test=create-channel]").click()
    editor = page.locator("[data-test=channel-editor]")
    expect(editor).to_have_attribute("open", "")
    expect(editor.locator("#err-channel-url")).to_contain_text("http")
    expect(editor.locator("input[name=secret]")).to_have_value("")  # never sent back
    token = "a1b2c3d4e5f6deadbeef"
    editor.locator("input[name=url]").fill(
        f"https://oapi.dingtalk.com/robot/send?access_token={token}"
    )
    editor.locator("input[name=secret]").fill("SEC-signing-secret")
    editor.locator("[data-test=create-channel]").click()
    expect(page.locator(".flash")).to_contain_text("Notification channel created")
    row = page.locator("tr[data-channel=ops-robot]")
    expect(row).to_contain_text("DingTalk robot")
    expect(row).to_contain_text("access_token=…")
    expect(row).to_contain_text("signed")
    assert token not in page.content() and "SEC-signing-secret" not in page.content()
    asked = accept_dialogs(page)
    row.locator("[data-test=delete-channel-ops-robot]").click()
    expect(page.locator(".flash")).to_contain_text("Notification channel deleted")
    expect(page.locator("tr[data-channel=ops-robot]")).to_have_count(0)
    assert asked and "ops-robot" in asked[0]


def test_a_member_reads_alerts_without_edit_controls_and_may_not_change_them(
    context: BrowserContext, admin_api: Client, lab
) -> None:
    name = unique("mei")
    admin_api.users.create(name, "mei-password")
    page = context.new_page()
    log_in(page, name, "mei-password")
    page.click("nav >> text=Alerts")
    expect(page.locator("[data-test=rules] tr[data-rule]").first).to_be_visible()
    expect(page.locator("main form")).to_have_count(0)
    expect(page.locator("#channels")).to_have_count(0)
    expect(page.locator("[data-test=rule-editor]")).to_have_count(0)
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    for path, form in (
        ("/alerts/rules/1", {"action": "disable"}),
        ("/alerts/rules", {"name": "mine", "metric": "gpu_present", "threshold": "0"}),
        ("/alerts/silences", {"match": "node=vm", "hours": "2"}),
        ("/alerts/channels", {"name": "x", "kind": "webhook", "url": "https://example.org"}),
        ("/alerts/channels/1", {"action": "delete"}),
    ):
        answer = page.request.post(path, form={"csrf_token": csrf, **form}, max_redirects=0)
        assert answer.status == 403, (path, answer.status)
    # The charts' data obeys the API's rules: another project's job stays closed.
    answer = page.request.get(
        f"/charts/query?metric=job_gpu_power_watts&label=job={lab['busy_job']}&range=15m"
    )
    assert answer.status == 404 and "no job" in answer.json()["detail"]
    answer = page.request.get("/charts/query?metric=gpu_power_watts&range=15m")
    assert answer.status == 200 and len(answer.json()["series"]) == 4


def test_a_finished_jobs_page_shows_its_energy_and_charts_of_its_life(
    context: BrowserContext, lab, admin_api: Client
) -> None:
    job = admin_api.jobs.submit(
        {
            "project": lab["project"],
            "name": "short-burst",
            "command": ["sleep", "4"],
            "resources": {"gpus": 1, "cpus": 0.25, "memory": "1Gi"},
        }
    )
    wait_for(lambda: admin_api.jobs.get(job.id).state == "succeeded")
    page = admin_page(context)
    with page.expect_request(lambda r: "job_gpu_power_watts" in r.url and "end=" in r.url):
        page.goto(f"/jobs/{job.id}")
    energy = page.locator("[data-test=energy]")
    expect(energy).to_have_text(re.compile(r"^\d+(\.\d+)? k?Wh$"))
    assert float(energy.get_attribute("data-wh") or 0) > 0
    assert float((energy.text_content() or "0").split()[0]) > 0
    for name in ("job-utilization", "job-power", "job-energy"):
        expect_drawn(page.locator(f"[data-test=chart-{name}]"))
    expect(page.locator("[data-test=chart-job-power] .u-legend")).to_contain_text("power draw")
    screenshot(page, "job-charts-en")


def test_overview_charts_every_gpu_and_the_range_picker_changes_the_range(
    context: BrowserContext, browser: Browser, console, lab
) -> None:
    page = admin_page(context)
    utilisation = page.locator("[data-test=chart-gpu-utilization]")
    expect_drawn(utilisation)
    expect_drawn(page.locator("[data-test=chart-gpu-power]"))
    for index in range(4):
        expect(utilisation.locator(".u-legend")).to_contain_text(f"GPU {index}")
    expect(page.locator("[data-pick='1h']")).to_have_attribute("aria-current", "true")
    # The picker reloads the page for the new range; the charts ask for it.
    with page.expect_request(lambda r: "/charts/query" in r.url and "range=15m" in r.url):
        page.click("[data-pick='15m']")
    expect(page).to_have_url(re.compile(r"/\?range=15m$"))
    expect(page.locator("[data-pick='15m']")).to_have_attribute("aria-current", "true")
    expect(page.locator("[data-pick='1h']")).not_to_have_attribute("aria-current", "true")
    expect(utilisation).to_have_attribute("data-window", "15m")
    expect_drawn(utilisation)
    # The overview's figures refresh every 5 s; the charts beside them are not redrawn from
    # scratch (the same element, its chart kept).
    page.evaluate("document.querySelector('[data-test=chart-gpu-utilization]').dataset.mark = '1'")
    with page.expect_response(lambda r: r.url.endswith("/") and r.request.method == "GET"):
        pass
    expect(page.locator("#overview [data-test=gpus-in-use]")).to_have_text("1")
    expect(utilisation).to_have_attribute("data-mark", "1")
    expect_drawn(utilisation)
    screenshot(page, "overview-charts-en")
    chinese = new_context(browser, console, locale="zh-CN")
    page = admin_page(chinese)
    page.goto("/?range=15m")
    expect(page.locator("#overview-charts h2")).to_contain_text("GPU 利用率与功耗")
    expect(page.locator("[data-pick='15m']")).to_have_text("15 分钟")
    expect_drawn(page.locator("[data-test=chart-gpu-power]"))
    screenshot(page, "overview-charts-zh-CN")
    chinese.close()


def test_a_node_page_charts_cpu_memory_disks_and_network(
    context: BrowserContext, browser: Browser, console, lab
) -> None:
    page = admin_page(context)
    page.goto("/nodes")
    page.click("[data-test=node-link]")
    expect(page).to_have_url(re.compile(r"/nodes/[^/]+$"))
    expect(page.locator("[data-gpu-link]")).to_have_count(4)
    expect_all_drawn(page)
    expect(page.locator("[data-test=chart-cpu-cores] .u-legend")).to_contain_text("CPU 0")
    expect(page.locator("[data-test=chart-disk] .u-legend")).to_contain_text("data directory")
    expect(page.locator("[data-test=chart-connections] .u-legend")).to_contain_text("TCP")
    expect(page.locator("[data-test=chart-memory] .u-legend")).to_contain_text("total")
    # A node without CPU sensors has no temperature chart, rather than an empty one.
    temperature = page.locator("[data-test=chart-cpu-temperature]")
    expect(temperature).to_have_attribute("data-state", re.compile("drawn|empty"))
    if temperature.get_attribute("data-state") == "empty":
        expect(temperature).to_be_hidden()
    # Each GPU of the node links to its own page.
    page.click("[data-gpu-link] >> nth=0")
    expect(page).to_have_url(re.compile(r"/gpus/GPU-"))
    page.go_back()
    expect_drawn(page.locator("[data-test=chart-cpu]"))
    screenshot(page, "node-en")
    chinese = new_context(browser, console, locale="zh-CN")
    page = admin_page(chinese)
    page.goto(f"/nodes/{console_node(page)}")
    expect(page.locator("h1")).to_contain_text("节点")
    expect_all_drawn(page)
    expect(page.locator("[data-test=chart-disk] .u-legend")).to_contain_text("数据目录")
    screenshot(page, "node-zh-CN")
    chinese.close()


def console_node(page: Page) -> str:
    page.goto("/nodes")
    return page.locator("[data-node]").first.get_attribute("data-node") or ""


def test_a_gpu_page_shows_its_facts_users_and_telemetry(
    context: BrowserContext, browser: Browser, console, lab, admin_api: Client
) -> None:
    busy = admin_api.jobs.get(lab["busy_job"])
    uuid = busy.placement.gpus[0].uuid
    page = admin_page(context)
    page.goto("/nodes")
    page.click(f"[data-gpu='{uuid}'] a.model")
    expect(page).to_have_url(re.compile(f"/gpus/{uuid}$"))
    facts = page.locator(f"section[data-gpu='{uuid}']")
    expect(facts).to_contain_text("A100-SXM4-80GB")
    expect(facts).to_contain_text("80 GiB")
    expect(facts).to_contain_text("Simulated")
    expect(facts.locator("[data-test=used-by]")).to_contain_text(f"#{busy.id}")
    expect_all_drawn(page)
    power = page.locator("[data-test=chart-power]")
    expect(power.locator(".u-legend")).to_contain_text("power limit")
    expect(power.locator(".u-legend")).to_contain_text("power draw")
    expect(page.locator("[data-test=chart-ecc] .u-legend")).to_contain_text("uncorrected")
    # The picker's choice reaches every chart of the page.
    with page.expect_request(lambda r: "/charts/query" in r.url and "range=6h" in r.url):
        page.click("[data-pick='6h']")
    expect(power).to_have_attribute("data-window", "6h")
    page.goto(f"/gpus/{uuid}?range=15m")
    expect_all_drawn(page)
    screenshot(page, "gpu-en")
    chinese = new_context(browser, console, locale="zh-CN")
    page = admin_page(chinese)
    page.goto(f"/gpus/{uuid}?range=15m")
    expect(page.locator("[data-test=chart-power] figcaption")).to_have_text("功耗")
    expect_all_drawn(page)
    screenshot(page, "gpu-zh-CN")
    chinese.close()
    page = context.new_page()
    page.goto("/gpus/GPU-nonexistent")
    expect(page.locator("main")).to_contain_text("GPU-nonexistent")


UNTRANSLATED = re.compile(r"\b(?:web|label|error|validation)\.[a-z_]+\.?[a-z_.]*")


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_monitoring_pages_are_complete_in_both_languages(
    browser: Browser, console, locale: str, admin_api: Client
) -> None:
    context = new_context(browser, console, locale=locale)
    page = admin_page(context)
    uuid = admin_api.nodes.list()[0].gpus[0].uuid
    for path in ("/", "/alerts", f"/nodes/{console_node(page)}", f"/gpus/{uuid}"):
        page.goto(path)
        if path != "/alerts":  # the charts' own texts too
            page.locator("figure[data-chart][data-state]").first.wait_for(state="attached")
        text = page.locator("body").inner_text()
        assert not UNTRANSLATED.search(text), (locale, path, UNTRANSLATED.search(text))
        html = page.content()
        assert not UNTRANSLATED.search(re.sub(r"<[^>]+>", " ", html)), (locale, path)
    context.close()
