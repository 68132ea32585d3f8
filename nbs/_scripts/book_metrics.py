"""Open every page of a built book in Chromium at 1280 and 400 px: print what a reader sees, and check it.

    python nbs/_scripts/book_metrics.py [HTML_DIR] [--json FILE] [--check]

HTML_DIR defaults to _build/book/_build/html (what `make book` builds). The report gives, per page and for the
book: the visible code lines (folded and hidden code does not count), the longest visible code line, code blocks,
outputs and display equations wider than their box at 1280 px, equations clipped at 400 px, how large figures are
shown against their own size, which numbered chapters end with exercises, and anything a reader should never see
(MathJax errors, missing images, images whose alt text is a file name, warnings, build paths, nbdev directives). `--check` exits 1 when a rule is broken.
It needs selenium and a Chromium with its driver (Debian: `apt-get install chromium chromium-driver`).
"""
import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import sys
import threading
from pathlib import Path

import yaml

NBS = Path(__file__).resolve().parents[1]
ROOT = NBS.parent
DEFAULT_HTML = ROOT / '_build' / 'book' / '_build' / 'html'
WIDE, NARROW = 1280, 400
SKIP_PAGES = {'genindex', 'search', 'py-modindex'}
# What a reader must never see in a page's text: warnings and the paths of the machine that built the book.
BUILD_TEXT = ['UserWarning', 'DeprecationWarning', 'FutureWarning', 'RuntimeWarning', 'Traceback (most recent',
              '/work/', '/home/runner', '.venv', 'site-packages', '/tmp/', 'nbdev_test', '_build/']
LIMITS = dict(avg_code_lines=50, max_code_lines=80, longest_code_line=80, min_figure_ratio=0.8)

# Runs in the page. Visible = shown without a click: not inside a closed <details> (folded code, a dropdown).
MEASURE_JS = r"""
const article = document.querySelector('article.bd-article') || document.body;
const visible = el => !el.closest('details:not([open])') && el.getClientRects().length > 0 &&
  (!el.checkVisibility || el.checkVisibility());
const px = v => { const m = /^([\d.]+)px$/.exec(v || ''); return m ? parseFloat(m[1]) : null; };
const out = {title: (article.querySelector('h1') || {}).textContent || '', code: [], wide_code: [], wide_outputs: [],
             wide_eq: [], clipped_eq: [], figures: [], images_broken: [], math_errors: 0, math_unrendered: 0,
             directives: [], stderr: 0, exercises: false, page_overflow: 0, folded_longest: 0, bad_alts: []};
out.title = out.title.replace(/#$/, '').trim();
for (const pre of article.querySelectorAll('div[class*="highlight-"] pre')) {
  const inOutput = pre.closest('.cell_output') !== null;
  const text = pre.textContent.replace(/\n$/, '');
  if (!inOutput && /^\s*#\s*\|/m.test(text)) out.directives.push(text.split('\n')[0].slice(0, 60));
  if (inOutput) continue;
  const lines = text.split('\n');
  const longest = Math.max(...lines.map(l => l.length));
  if (!visible(pre)) { out.folded_longest = Math.max(out.folded_longest, longest); continue; }
  out.code.push({lines: lines.length, longest: longest, first: lines[0].slice(0, 60)});
  if (pre.scrollWidth > pre.clientWidth + 1) out.wide_code.push(lines[0].slice(0, 60));
}
for (const cell of article.querySelectorAll('.cell_output')) {
  if (!visible(cell)) continue;
  const box = cell.getBoundingClientRect().width;
  let wide = false;
  // (inline math is left out: a glyph's overhang makes it a pixel or two wider than itself)
  for (const el of cell.querySelectorAll('pre, table, div.output, img, mjx-container[display="true"]')) {
    if (!visible(el)) continue;
    if (el.scrollWidth > el.clientWidth + 1 || el.getBoundingClientRect().width > box + 1) wide = true;
  }
  if (cell.querySelector('.stderr')) out.stderr += 1;
  if (wide) out.wide_outputs.push(cell.textContent.trim().slice(0, 60));
}
for (const eq of article.querySelectorAll('mjx-container[display="true"]')) {
  if (!visible(eq)) continue;
  const math = eq.querySelector('mjx-math');
  const box = (eq.closest('div.math, .cell_output, p, li, section') || article).clientWidth;
  const width = math ? math.getBoundingClientRect().width : eq.scrollWidth;
  const label0 = (eq.querySelector('mjx-assistive-mml') || eq).textContent.trim().slice(0, 60);
  if (getComputedStyle(eq).overflowY === 'hidden' && eq.scrollHeight > eq.clientHeight + 1) out.clipped_eq.push(label0);
  if (width <= box + 1) continue;
  const label = (eq.querySelector('mjx-assistive-mml') || eq).textContent.trim().slice(0, 60);
  out.wide_eq.push(label);
  // Not clipped when the equation's own box (or the math block holding it) scrolls sideways.
  let scrolls = false;
  for (let el = eq; el && el !== article; el = el.parentElement) {
    const ox = getComputedStyle(el).overflowX;
    if ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth) { scrolls = true; break; }
    if (el.matches('div.math, .cell_output')) break;
  }
  if (!scrolls) out.clipped_eq.push(label);
}
out.math_errors = article.querySelectorAll('mjx-merror, .MathJax_Error').length;
out.images = article.querySelectorAll('img').length;
out.math_unrendered = [...article.querySelectorAll('div.math, span.math')]
  .filter(el => !el.querySelector('mjx-container')).length;
for (const img of article.querySelectorAll('img')) {
  const alt = (img.getAttribute('alt') || '').trim();
  if (!alt || /\.(png|jpe?g|svg|gif)$/i.test(alt)) out.bad_alts.push(alt || img.getAttribute('src'));
  if (!(img.complete && img.naturalWidth > 0)) { out.images_broken.push(img.getAttribute('src')); continue; }
  if (!visible(img) || !img.closest('.cell_output, figure')) continue;
  const natural = px(img.style.width) || parseFloat(img.getAttribute('width')) || img.naturalWidth;
  out.figures.push(img.getBoundingClientRect().width / natural);
}
for (const h of article.querySelectorAll('h2')) if (/^\s*(\d+\.\d*\s*)?Exercises/i.test(h.textContent)) out.exercises = true;
out.text = article.innerText;
out.page_overflow = document.documentElement.scrollWidth > window.innerWidth + 1 ? 1 : 0;
return out;
"""

# Wait for MathJax to finish and every image to load (or fail).
SETTLE_JS = r"""
const done = arguments[arguments.length - 1];
const imgs = [...document.images];
imgs.forEach(img => img.loading = 'eager');
const mj = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
Promise.all([mj, ...imgs.map(img => img.complete ? 0 : new Promise(r => { img.onload = img.onerror = r; }))])
  .then(() => requestAnimationFrame(() => done(true)), () => done(false));
"""


def find_chromium():
    "Paths of a Chromium and its driver (CHROME_BIN and CHROMEDRIVER override), or None when either is missing."
    browser = os.environ.get('CHROME_BIN') or next(
        (p for p in map(shutil.which, ['chromium', 'chromium-browser', 'google-chrome']) if p), None)
    drivers = [os.environ.get('CHROMEDRIVER'), shutil.which('chromedriver'), '/usr/lib/chromium/chromedriver',
               os.path.join(os.environ.get('CHROMEWEBDRIVER', '/nonexistent'), 'chromedriver')]  # GitHub's runners
    driver = next((p for p in drivers if p and Path(p).exists()), None)
    return (browser, driver) if browser and driver else None


def toc_pages(toc_path=NBS / '_toc.yml'):
    "Page names in reading order, and which are appendix pages (the part captioned 'Appendix', and references)."
    toc = yaml.safe_load(toc_path.read_text(encoding='utf-8'))
    order, appendix = [toc['root']], set()

    def walk(entries, in_appendix):
        for entry in entries or []:
            if 'file' in entry:
                order.append(entry['file'])
                if in_appendix: appendix.add(entry['file'])
            walk(entry.get('sections'), in_appendix)
    for part in toc.get('parts', []):
        walk(part.get('chapters'), part.get('caption', '').lower().startswith('appendix'))
    walk(toc.get('chapters'), False)
    return order, appendix | {'references'}


def serve(html_dir):
    "Serve the book over http on a free local port (MathJax and images behave as on the web)."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def open_browser(paths):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = paths[0]
    for arg in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                '--force-device-scale-factor=1', '--hide-scrollbars']:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(120)
    return driver


def measure(html_dir, paths=None, only=None):
    "Open every page (or those named in `only`) at 1280 and 400 px; returns {page: {...}} in reading order."
    html_dir = Path(html_dir)
    paths = paths or find_chromium()
    if not paths: raise RuntimeError('no Chromium found (Debian: apt-get install chromium chromium-driver)')
    order, appendix = toc_pages()
    names = [n for n in order if (html_dir / f'{n}.html').exists()]
    names += sorted(p.stem for p in html_dir.glob('*.html') if p.stem not in names and p.stem not in SKIP_PAGES)
    if only: names = [n for n in names if n in only]
    server, driver = serve(html_dir), open_browser(paths)
    pages = {}
    try:
        for name in names:
            url = f'http://127.0.0.1:{server.server_address[1]}/{name}.html'
            result = {}
            for width in (WIDE, NARROW):
                driver.set_window_size(width, 1000)
                driver.get(url)
                driver.execute_async_script(SETTLE_JS)
                result[width] = driver.execute_script(MEASURE_JS)
            wide, narrow = result[WIDE], result[NARROW]
            text = wide.pop('text') + '\n' + narrow.pop('text')
            pages[name] = dict(
                title=wide['title'], kind='front' if name in (order[0], 'index') else
                ('appendix' if name in appendix or name not in order else 'chapter'),
                code_blocks=len(wide['code']), code_lines=sum(c['lines'] for c in wide['code']),
                code_block_sizes=[(c['lines'], c['longest'], c['first']) for c in wide['code']],
                longest_line=max([c['longest'] for c in wide['code']], default=0),
                folded_longest_line=wide['folded_longest'],
                wide_code=wide['wide_code'], wide_outputs=wide['wide_outputs'], wide_eq=wide['wide_eq'],
                clipped_eq_400=narrow['clipped_eq'], wide_eq_400=len(narrow['wide_eq']),
                figure_ratios=[round(r, 3) for r in wide['figures']],
                images_broken=sorted(set(wide['images_broken'] + narrow['images_broken'])),
                images=wide['images'], bad_alts=wide['bad_alts'],
                math_errors=wide['math_errors'] + narrow['math_errors'], math_unrendered=wide['math_unrendered'],
                build_text=sorted({t for t in BUILD_TEXT if t in text}), directives=wide['directives'],
                stderr_outputs=wide['stderr'], exercises=wide['exercises'], page_overflow_400=narrow['page_overflow'])
    finally:
        driver.quit()
        server.shutdown()
    return pages


def summary(pages):
    "The book-wide numbers."
    chapters = {n: p for n, p in pages.items() if p['kind'] == 'chapter'}
    lines = [p['code_lines'] for p in chapters.values()]
    ratios = [r for p in pages.values() for r in p['figure_ratios']]
    longest_page = max(pages, key=lambda n: pages[n]['longest_line'], default=None)
    return dict(
        pages=len(pages), chapters=len(chapters),
        avg_code_lines=round(statistics.mean(lines), 1) if lines else 0,
        max_code_lines=max(lines, default=0),
        max_code_lines_page=max(chapters, key=lambda n: chapters[n]['code_lines'], default=None),
        total_code_lines=sum(lines),
        longest_code_line=pages[longest_page]['longest_line'] if longest_page else 0, longest_code_line_page=longest_page,
        longest_folded_code_line=max((p['folded_longest_line'] for p in pages.values()), default=0),
        code_blocks=sum(p['code_blocks'] for p in pages.values()),
        wide_code=sum(len(p['wide_code']) for p in pages.values()),
        wide_outputs=sum(len(p['wide_outputs']) for p in pages.values()),
        wide_eq=sum(len(p['wide_eq']) for p in pages.values()),
        wide_eq_400=sum(p['wide_eq_400'] for p in pages.values()),
        clipped_eq_400=sum(len(p['clipped_eq_400']) for p in pages.values()),
        figures=len(ratios), median_figure_ratio=round(statistics.median(ratios), 3) if ratios else None,
        min_figure_ratio=round(min(ratios), 3) if ratios else None,
        chapters_with_exercises=sum(p['exercises'] for p in chapters.values()),
        chapters_without_exercises=[n for n, p in chapters.items() if not p['exercises']],
        math_errors=sum(p['math_errors'] + p['math_unrendered'] for p in pages.values()),
        images_broken=sum(len(p['images_broken']) for p in pages.values()),
        images=sum(p['images'] for p in pages.values()),
        bad_alts=sum(len(p['bad_alts']) for p in pages.values()),
        build_text=sum(len(p['build_text']) for p in pages.values()),
        directives=sum(len(p['directives']) for p in pages.values()),
        stderr_outputs=sum(p['stderr_outputs'] for p in pages.values()),
        pages_overflowing_400=sum(p['page_overflow_400'] for p in pages.values()),
    )


def failures(pages):
    "The broken rules, as {rule: message}; empty when the book passes."
    s, found = summary(pages), {}

    def where(key, fmt=lambda v: v):
        return '; '.join(f'{n}: {fmt(p[key])}' for n, p in pages.items() if p[key])
    if s['math_errors']:
        found['mathjax'] = f"{s['math_errors']} MathJax error or unrendered nodes: " + \
            '; '.join(f'{n}' for n, p in pages.items() if p['math_errors'] or p['math_unrendered'])
    if s['images_broken']: found['images'] = 'images that did not load: ' + where('images_broken')
    if s['bad_alts']: found['alt_text'] = 'images whose alt text is empty or a file name: ' + where('bad_alts')
    if s['clipped_eq_400']: found['clipped'] = 'equations clipped at 400 px: ' + where('clipped_eq_400')
    if s['wide_eq']: found['wide_equations'] = 'equations wider than the column at 1280 px: ' + where('wide_eq')
    if s['wide_code']: found['wide_code'] = 'code blocks wider than their box at 1280 px: ' + where('wide_code', len)
    if s['wide_outputs']: found['wide_outputs'] = 'outputs wider than their box at 1280 px: ' + where('wide_outputs', len)
    if s['build_text'] or s['stderr_outputs']:
        found['build_text'] = 'warnings or build paths shown: ' + where('build_text') + \
            (f"; {s['stderr_outputs']} stderr outputs: " + where('stderr_outputs') if s['stderr_outputs'] else '')
    if s['directives']: found['directives'] = 'nbdev directives shown: ' + where('directives')
    if s['avg_code_lines'] > LIMITS['avg_code_lines'] or s['max_code_lines'] > LIMITS['max_code_lines']:
        found['code_budget'] = (f"visible code lines per chapter: avg {s['avg_code_lines']} (limit {LIMITS['avg_code_lines']}),"
                                f" max {s['max_code_lines']} in {s['max_code_lines_page']} (limit {LIMITS['max_code_lines']})")
    if s['longest_code_line'] > LIMITS['longest_code_line']:
        found['line_length'] = (f"longest visible code line: {s['longest_code_line']} characters in "
                                f"{s['longest_code_line_page']} (limit {LIMITS['longest_code_line']})")
    if s['median_figure_ratio'] is not None and s['median_figure_ratio'] < LIMITS['min_figure_ratio']:
        found['figure_size'] = f"median figure display ratio {s['median_figure_ratio']} < {LIMITS['min_figure_ratio']}"
    if s['chapters_without_exercises']:
        found['exercises'] = 'numbered chapters without an Exercises section: ' + ', '.join(s['chapters_without_exercises'])
    return found


def report(pages):
    "The printed report: one row per page, then the book's numbers and the broken rules."
    rows = [f"{'page':<26} {'kind':<8} {'code':>5} {'long':>5} {'wide code/out/eq':>17} {'clip400':>7} "
            f"{'figs':>4} {'ratio':>6} {'ex':>3}  title"]
    for name, p in pages.items():
        ratio = f"{statistics.median(p['figure_ratios']):.2f}" if p['figure_ratios'] else '-'
        rows.append(f"{name[:26]:<26} {p['kind']:<8} {p['code_lines']:>5} {p['longest_line']:>5} "
                    f"{len(p['wide_code']):>5}/{len(p['wide_outputs']):>3}/{len(p['wide_eq']):>3}      "
                    f"{len(p['clipped_eq_400']):>7} {len(p['figure_ratios']):>4} {ratio:>6} "
                    f"{'yes' if p['exercises'] else '-':>3}  {p['title'][:50]}")
    s = summary(pages)
    rows += ['', f"visible code lines per numbered chapter: avg {s['avg_code_lines']}, max {s['max_code_lines']}"
                 f" ({s['max_code_lines_page']}), total {s['total_code_lines']} over {s['chapters']} chapters"
                 f" (limits: avg <= {LIMITS['avg_code_lines']}, max <= {LIMITS['max_code_lines']})",
             f"longest visible code line: {s['longest_code_line']} characters ({s['longest_code_line_page']}; limit "
             f"{LIMITS['longest_code_line']}); longest folded code line: {s['longest_folded_code_line']}",
             f"visible code blocks: {s['code_blocks']}; wider than their box at 1280 px: {s['wide_code']}",
             f"outputs wider than their box at 1280 px: {s['wide_outputs']}",
             f"display equations wider than the column at 1280 px: {s['wide_eq']}; at 400 px: {s['wide_eq_400']}, "
             f"of which clipped: {s['clipped_eq_400']}",
             f"median figure display ratio at 1280 px: {s['median_figure_ratio']} over {s['figures']} figures "
             f"(smallest {s['min_figure_ratio']})",
             f"numbered chapters with an Exercises section: {s['chapters_with_exercises']} of {s['chapters']}",
             f"images: {s['images']}, of which with an empty or file-name alt text: {s['bad_alts']}",
             f"MathJax errors: {s['math_errors']}; images not loaded: {s['images_broken']}; pages showing warnings or "
             f"build paths: {s['build_text']}; stderr outputs: {s['stderr_outputs']}; nbdev directives shown: "
             f"{s['directives']}; pages wider than a 400 px screen: {s['pages_overflowing_400']}"]
    broken = failures(pages)
    rows += ['', 'all rules hold' if not broken else f'{len(broken)} rules broken:']
    rows += [f'- {rule}: {message}' for rule, message in broken.items()]
    return '\n'.join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('html_dir', nargs='?', default=str(DEFAULT_HTML), help='the built book (its html folder)')
    parser.add_argument('--json', help='also write the per-page numbers and the summary to this file')
    parser.add_argument('--check', action='store_true', help='exit 1 when a rule is broken')
    parser.add_argument('--pages', nargs='+', metavar='NAME', help='only these pages (e.g. 04_adam)')
    parser.add_argument('--blocks', action='store_true', help='also list each visible code block: lines, longest line')
    args = parser.parse_args()
    if not (Path(args.html_dir) / 'index.html').exists(): sys.exit(f'no built book in {args.html_dir}: run `make book`')
    pages = measure(args.html_dir, only=args.pages)
    if args.blocks:
        for name, p in pages.items():
            for lines, longest, first in p['code_block_sizes']: print(f'{name:<26} {lines:>4} lines, longest {longest:>3}: {first}')
    print(report(pages))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(summary=summary(pages), pages=pages), indent=1), encoding='utf-8')
    if args.check and failures(pages): sys.exit(1)


if __name__ == '__main__':
    main()
