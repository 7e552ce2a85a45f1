// Drives Debian's Chromium (headless) against the live view for tests/view_browser.rs: opens
// the page, waits for the chip and the droplet, clicks an electrode, waits until the page shows
// it actuated and the droplet on it, takes a screenshot, and prints a JSON summary (the last
// line of stdout). The Rust test makes the assertions; this script only reports.
//
// node drive.mjs --url URL --profile DIR --click ID --droplet-from ID --other ID \
//                --screenshot FILE [--chromium PATH] [--deadline-ms MS]
import { chromium } from 'playwright-core';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
for (const need of ['url', 'profile', 'click', 'droplet-from', 'other', 'screenshot']) {
  if (!args[need]) {
    console.error(`missing --${need}`);
    process.exit(2);
  }
}
const deadline = Number(args['deadline-ms'] || 60000);
const steps = [];
const step = async (name, run) => {
  const started = Date.now();
  try {
    const value = await run();
    const shown = ['string', 'number', 'boolean'].includes(typeof value) ? value : undefined;
    steps.push({ name, ok: true, ms: Date.now() - started, value: shown });
    return value;
  } catch (e) {
    steps.push({ name, ok: false, ms: Date.now() - started, error: String(e.message || e) });
    throw e;
  }
};

const context = await chromium.launchPersistentContext(args.profile, {
  executablePath: args.chromium || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1100, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  timeout: deadline,
});
let summary = { steps };
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(deadline);
  const failed = [];
  page.on('requestfailed', (r) => failed.push(r.url()));
  const pad = (id) => page.locator(`path.pad[data-id="${id}"]`);
  const droplet = (id) => page.locator(`.droplets circle[data-electrode="${id}"]`);

  await step('open', () => page.goto(args.url).then((r) => r && r.status()));
  await step('chip drawn', () => pad(args.click).waitFor({ state: 'attached' }));
  await step('board connected', () =>
    page.waitForFunction(() => document.getElementById('board').textContent === 'board connected'));
  await step('droplet shown', () => droplet(args['droplet-from']).waitFor({ state: 'attached' }));
  await step('click', () => pad(args.click).click());
  await step('electrode actuated', () =>
    page.waitForFunction((id) => document.querySelector(`path.pad[data-id="${id}"]`)
      .classList.contains('on'), args.click));
  await step('droplet arrived', () => droplet(args.click).waitFor({ state: 'attached' }));
  await step('capacitance shown', () =>
    page.waitForFunction(() => document.getElementById('cap-now').textContent.includes('pF')));
  // Move the pointer off the chip so that no hover colour is in the picture; the droplet's
  // glide (a CSS transition) is finished at once for the picture.
  await page.mouse.move(0, 0);
  await step('screenshot', () => page.screenshot({ path: args.screenshot, animations: 'disabled' }));
  const box = async (id) => pad(id).boundingBox();
  summary = {
    steps,
    clicked: await box(args.click),
    other: await box(args.other),
    device_pixel_ratio: await page.evaluate(() => window.devicePixelRatio),
    hv: await page.locator('#hv').textContent(),
    capacitance: await page.locator('#cap-now').textContent(),
    actuated: await page.locator('path.pad.on').evaluateAll((ps) => ps.map((p) => p.dataset.id)),
    failed_requests: failed,
  };
} catch (e) {
  summary.error = String(e.message || e);
} finally {
  await context.close();
}
console.log(JSON.stringify(summary));
