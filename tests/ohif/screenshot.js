// Opens OHIF on one study in headless Chromium (playwright-core driving the system's /usr/bin/chromium), takes a
// screenshot of the source image, opens the series whose thumbnail shows LABEL (double click, as a user does),
// and takes a second one:  node screenshot.js URL LABEL BEFORE.png AFTER.png
// Prints JSON: the viewport canvas rectangle (before opening the series), console errors, and the page text.
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');

async function settle(page, ms) {
  await page.waitForLoadState('networkidle', { timeout: 60000 }).catch(() => {});
  await page.waitForTimeout(ms);
}

(async () => {
  const [url, label, before, after] = process.argv.slice(2);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinyusfm-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
  });
  const errors = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text().slice(0, 300)); });
    page.on('pageerror', (e) => errors.push('pageerror: ' + String(e).slice(0, 300)));
    await page.goto(url, { waitUntil: 'load', timeout: 120000 });
    await page.locator('canvas.cornerstone-canvas').first().waitFor({ timeout: 120000 });
    await settle(page, 5000);
    const skip = page.getByText('Skip all');  // the first-visit tour
    if (await skip.count()) await skip.first().click();
    await page.mouse.move(5, 795);
    await settle(page, 2000);
    await page.screenshot({ path: before });
    const canvas = await page.evaluate(() => Array.from(document.querySelectorAll('canvas.cornerstone-canvas')).map((c) => {
      const r = c.getBoundingClientRect();
      return { x: r.x, y: r.y, w: r.width, h: r.height };
    }));
    await page.getByText(label).first().dblclick();
    await settle(page, 8000);
    await page.mouse.move(5, 795);
    await page.waitForTimeout(1000);
    await page.screenshot({ path: after });
    console.log(JSON.stringify({ canvas, errors, text: (await page.innerText('body')).slice(0, 3000) }));
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
})().catch((e) => { console.error(e); process.exit(1); });
