// Drives Postern's web console in headless Chromium, for crates/postern/tests/console_browser.rs:
// signs in through the development identity provider as an approver, finds the pending request,
// checks what the detail shows, approves it, and saves a screenshot. Along the way it fails on
// any script error or content-security-policy violation, on a token in any URL the browser
// loads, and on anything script can read (cookies, storage) that would hold one.
//
// Everything it needs comes from the environment (see `need` below). Prints one JSON line with
// what it saw; exits non-zero with the reason on failure.

import { chromium } from 'playwright-core';

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`approve.mjs: set ${name}`);
    process.exit(2);
  }
  return value;
}

const consoleUrl = need('CONSOLE_URL'); // http://127.0.0.1:PORT/console/
const executablePath = need('CHROMIUM');
const subject = need('APPROVER_SUBJECT');
const groups = need('APPROVER_GROUPS');
const requester = need('REQUESTER_SUBJECT');
const fragment = need('STATEMENT_FRAGMENT'); // part of the held statement's text
const screenshot = need('SCREENSHOT');
const timeout = Number(process.env.STEP_TIMEOUT_MS || 20000);

// A JWT starts with the base64url of '{"' — in a URL it would be a token in the open.
const TOKEN_IN_TEXT = /eyJ[A-Za-z0-9_-]{10,}/;

const problems = [];
const args = ['--disable-gpu', '--disable-dev-shm-usage'];
if (typeof process.getuid === 'function' && process.getuid() === 0) args.push('--no-sandbox');
const browser = await chromium.launch({ executablePath, headless: true, args });
let failed = null;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  context.setDefaultTimeout(timeout);
  const page = await context.newPage();
  let signedIn = false;
  page.on('console', (message) => {
    // Failed loads are judged below, by URL and status.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('response', (response) => {
    const url = new URL(response.url());
    // Before signing in, /console/session answers 401: that is how the page knows.
    const expected = !signedIn && url.pathname === '/console/session' && response.status() === 401;
    if (response.status() >= 400 && !expected) {
      problems.push(`HTTP ${response.status()} for ${url.pathname}`);
    }
  });
  page.on('pageerror', (error) => problems.push(`script error: ${error.message}`));
  page.on('request', (request) => {
    if (TOKEN_IN_TEXT.test(request.url())) problems.push(`a token in a URL: ${request.url()}`);
  });

  // Not signed in: the console offers to sign in.
  await page.goto(consoleUrl);
  await page.getByRole('link', { name: 'Sign in' }).click();

  // The development provider's form.
  await page.waitForURL(/\/authorize\?/);
  await page.getByText('Development sign-in — no password: this provider is for trying Postern').waitFor();
  await page.fill('#subject', subject);
  await page.fill('#groups', groups);
  await Promise.all([
    page.waitForURL(consoleUrl),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);

  // Signed in, and nothing script can read holds a token.
  signedIn = true;
  await page.locator('#subject').filter({ hasText: subject }).waitFor();
  const readable = await page.evaluate(() => ({
    cookie: document.cookie,
    local: Object.keys(localStorage).length,
    session: Object.keys(sessionStorage).length,
  }));
  if (readable.cookie !== '' || readable.local !== 0 || readable.session !== 0) {
    problems.push(`script can read state: ${JSON.stringify(readable)}`);
  }

  // The pending request, and what its detail says.
  const item = page.locator('#pending-list button.request').filter({ hasText: fragment }).first();
  await item.waitFor();
  await item.click();
  const detail = page.locator('[data-detail-for="pending"] article.detail');
  await detail.locator('.request-state', { hasText: 'pending' }).waitFor();
  await detail.locator('pre.sql .sql-keyword', { hasText: 'DELETE' }).first().waitFor();
  const requestId = (await detail.locator('.request-id').textContent()).trim();
  const facts = await detail.locator('dl.facts').first().textContent();
  for (const expected of [requester, 'demo / writer', 'duplicate order']) {
    if (!facts.includes(expected)) problems.push(`the detail does not show ${expected}: ${facts}`);
  }
  const policy = await detail.locator('.detail-body').textContent();
  if (!policy.includes('dbas')) problems.push(`the detail does not name the approver group: ${policy}`);

  // Approve, for 15 minutes, this statement only.
  await detail.locator('textarea[name="comment"]').fill('Checked: a duplicate order (browser test)');
  await detail.locator('select[name="ttl"]').selectOption('15m');
  await detail.locator('select[name="scope"]').selectOption('statement');
  await detail.getByRole('button', { name: 'Approve' }).click();
  await detail.locator('.flash', { hasText: 'Approved' }).waitFor();
  await detail.locator('.request-state', { hasText: 'approved' }).waitFor();
  // The live update (or the refresh after the decision) empties the pending list.
  await page.locator('#pending-empty').waitFor({ state: 'visible' });
  await page.screenshot({ path: screenshot, fullPage: true });

  if (problems.length === 0) {
    console.log(JSON.stringify({ approved: requestId, screenshot }));
  }
} catch (error) {
  failed = error;
} finally {
  await browser.close();
}
if (failed || problems.length) {
  if (failed) console.error(`approve.mjs: ${failed.stack || failed}`);
  for (const problem of problems) console.error(`approve.mjs: ${problem}`);
  process.exit(1);
}
