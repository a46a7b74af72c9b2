// Drives Debian's chromium (headless, through playwright-core) through the status page of a
// daemon that tests/ui.rs started: sign in, overview, events, search by item id, an event's
// page, dead letters, a replay with its confirmation, pause and resume, sign out. Saves a
// screenshot of each page to $SHOTS and exits non-zero at the first check that fails.
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { BASE_URL, UI_TOKEN, SHARE_ITEM, DEAD_ITEM, SHOTS } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
if (!BASE_URL || !UI_TOKEN || !SHARE_ITEM || !DEAD_ITEM || !SHOTS) {
  console.error("set BASE_URL, UI_TOKEN, SHARE_ITEM, DEAD_ITEM and SHOTS");
  process.exit(2);
}

function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
  console.log("ok: " + what);
}

mkdirSync(SHOTS, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "hookbridge-ui-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 860 },
});
const dialogs = [];
const elsewhere = [];
const problems = [];
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(15000);
page.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
page.on("pageerror", (e) => problems.push(String(e)));
// HTTP failures are judged by their responses (a wrong token's 401 is expected), the rest of
// the console's errors (script errors, resources the CSP blocked) are problems.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(m.text());
});
page.on("response", (r) => {
  const expected = r.status() === 401 && r.url() === BASE_URL + "/ui/signin";
  if (r.status() >= 400 && !expected) problems.push(r.status() + " for " + r.url());
});
context.on("request", (r) => { if (!r.url().startsWith(BASE_URL)) elsewhere.push(r.url()); });
const shot = (name) => page.screenshot({ path: join(SHOTS, name + ".png"), fullPage: true });
const heading = (name) => page.getByRole("heading", { level: 1, name }).waitFor();

try {
  // Sign in: a wrong token first, then the right one.
  await page.goto(BASE_URL + "/");
  check(page.url() === BASE_URL + "/ui/signin", "/ leads to the sign-in form");
  await shot("signin");
  await page.getByLabel("Admin token").fill("not-the-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").waitFor();
  check(page.url() === BASE_URL + "/ui/signin", "a wrong token shows the form again");
  await page.getByLabel("Admin token").fill(UI_TOKEN);
  await page.getByLabel("Admin token").press("Enter");
  await heading("Overview");
  check(!page.url().includes(UI_TOKEN), "the token is not in the URL");

  // Overview: the closed port's sink is not connected and says why; the mail sink waits.
  const audit = page.locator('tr[data-sink="audit"]');
  await audit.getByText("not connected").waitFor();
  check((await audit.locator(".error").innerText()).length > 0, "the audit sink shows its last error");
  const mail = page.locator('tr[data-sink="mail"]');
  check(/SMTP server/.test(await mail.locator(".error").innerText()), "the mail sink shows its last error");
  check((await mail.locator("td").nth(2).innerText()) === "2", "two deliveries wait at the mail sink");
  await page.getByRole("button", { name: "Pause auto-refresh" }).waitFor();
  await shot("overview");
  const asOf = await page.getByText(/^As of /).innerText();
  await page.waitForFunction((before) => !document.body.innerText.includes(before), asOf, { timeout: 12000 });
  check(true, "the overview refreshes by itself");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.textContent) === "Skip to content", "the first Tab reaches the skip link");
  await page.keyboard.press("Enter");
  check(await page.evaluate(() => document.activeElement.id) === "main", "the skip link moves focus to the content");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot("overview-phone");
  await page.setViewportSize({ width: 1280, height: 860 });

  // Pause and resume a sink.
  await page.getByRole("button", { name: "Pause sink log" }).click();
  await page.locator('tr[data-sink="log"]').getByText("paused").waitFor();
  await page.getByRole("button", { name: "Resume sink log" }).click();
  await page.getByRole("button", { name: "Pause sink log" }).waitFor();
  check(true, "pause and resume");

  // Events: every delivery with its sink status.
  await page.getByRole("link", { name: "Events", exact: true }).click();
  await heading("Events");
  const rows = page.locator("table.events tbody tr");
  check((await rows.count()) === 5, "five stored events listed");
  check(/log\s+delivered/.test(await rows.first().innerText()), "the newest shows its delivery to the log");
  await shot("events");

  // Find the shared item by its id, with the keyboard.
  await page.getByLabel("Search").fill(SHARE_ITEM);
  await page.getByLabel("Search").press("Enter");
  await page.waitForURL(/q=/);
  check((await rows.count()) === 1, "one event for the item id");
  const row = await rows.first().innerText();
  check(/mail\s+waiting/.test(row) && /next attempt/.test(row), "mail: waiting, with the next attempt");
  check(/451/.test(row), "with the mail server's last answer");
  check(/audit\s+ready/.test(row) && /log\s+delivered/.test(row), "audit ready, log delivered");
  await shot("events-search");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot("events-phone");
  await page.setViewportSize({ width: 1280, height: 860 });

  // Its page: fields, payload, routes and the attempt history.
  await rows.first().getByRole("link").first().click();
  await page.getByRole("heading", { level: 1, name: /^Event / }).waitFor();
  const attempts = await page.locator("table").first().innerText();
  check(/retry/.test(attempts) && /451/.test(attempts), "the attempt history shows the retry");
  check((await page.locator("pre").last().innerText()).includes(SHARE_ITEM), "the raw payload");
  check(/portal events to mail and audit/.test(await page.locator("body").innerText()), "the routes");
  await shot("event");

  // Dead letters: replay the refused delete, with its confirmation.
  await page.getByRole("link", { name: "Dead letters", exact: true }).click();
  await heading("Dead letters");
  const dead = page.locator("tbody tr", { hasText: DEAD_ITEM });
  check(/550/.test(await dead.innerText()), "the dead letter shows the refusal");
  await shot("dead");
  await dead.getByRole("button", { name: "Replay" }).click();
  await heading("Replay dead letters?");
  await shot("confirm");
  await page.getByRole("button", { name: "Replay 1 dead letter(s)" }).click();
  await page.getByText("Replayed 1 dead letter(s)").waitFor();
  check((await page.locator("tbody tr", { hasText: DEAD_ITEM }).count()) === 0, "it left the dead letters");

  // The replayed delivery reaches the (now accepting) mail server.
  await page.goto(BASE_URL + "/ui/events?q=" + DEAD_ITEM);
  await rows.first().getByRole("link").first().click();
  const deadline = Date.now() + 20000;
  let text = "";
  while (Date.now() < deadline) {
    text = await page.locator("ul.deliveries").innerText();
    if (/mail\s+delivered/.test(text)) break;
    await page.waitForTimeout(300);
    await page.reload();
  }
  check(/mail\s+delivered/.test(text), "the replayed delivery was delivered");

  // Sign out: the pages are closed again.
  await page.getByRole("button", { name: "Sign out" }).click();
  await heading("Sign in");
  await page.goto(BASE_URL + "/ui/events");
  check(page.url() === BASE_URL + "/ui/signin", "signed out");

  check(dialogs.length === 0, "no script from a payload ran: " + dialogs.join(", "));
  check(elsewhere.length === 0, "nothing loaded from elsewhere: " + elsewhere.join(", "));
  check(problems.length === 0, "no script errors or blocked resources: " + problems.join("; "));
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
