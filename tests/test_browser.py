"""The built book, in a real browser: Chromium opens every page at 1280 and 400 px (nbs/_scripts/book_metrics.py).

It tests the book that `make book` built (_build/book/_build/html); it does not build it. It is skipped, with the
reason, when there is no built book or no Chromium. BOOK_HTML=<html folder> tests another build (Debian: `apt-get install chromium chromium-driver`).
"""
import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'nbs' / '_scripts'))
import book_metrics  # noqa: E402

HTML = Path(os.environ.get('BOOK_HTML', book_metrics.DEFAULT_HTML))  # BOOK_HTML: test another build


@pytest.fixture(scope='module')
def pages():
    if not (HTML / 'index.html').exists():
        pytest.skip(f'browser test skipped: no built book in {HTML} (run `make book` first)')
    if book_metrics.find_chromium() is None:
        pytest.skip('browser test skipped: no Chromium and chromedriver found (apt-get install chromium chromium-driver)')
    pytest.importorskip('selenium', reason='browser test skipped: selenium is not installed')
    newer = [nb.name for nb in (ROOT / 'nbs').glob('*.ipynb') if nb.stat().st_mtime > (HTML / 'index.html').stat().st_mtime]
    if newer and HTML == book_metrics.DEFAULT_HTML:
        warnings.warn(f'the built book is older than {len(newer)} notebooks (e.g. {newer[0]}): run `make book` to test them')
    pages = book_metrics.measure(HTML)
    print('\n' + book_metrics.report(pages))
    return pages


RULES = {
    'mathjax': 'MathJax rendered every formula, with no error node',
    'images': 'every image loaded',
    'alt_text': "every image's alt text says what it shows: not empty, not a file name",
    'clipped': 'no display equation is clipped at 400 px (wide ones scroll)',
    'wide_equations': 'no display equation is wider than the column at 1280 px',
    'wide_code': 'no visible code block is wider than its box at 1280 px',
    'wide_outputs': 'no output is wider than its box at 1280 px',
    'build_text': 'no warning, stderr output or build path is shown',
    'directives': 'no nbdev directive is shown',
    'code_budget': 'numbered chapters show at most 50 visible code lines on average, 80 at most',
    'line_length': 'no visible code line is longer than 80 characters',
    'figure_size': 'figures are shown at 0.8 of their size or more (median) at 1280 px',
    'exercises': 'every numbered chapter has an Exercises section',
}


@pytest.mark.parametrize('rule', RULES)
def test_book_in_browser(pages, rule):
    broken = book_metrics.failures(pages)
    assert rule not in broken, f'{RULES[rule]}: {broken.get(rule)}'


def test_every_toc_page_was_opened(pages):
    order, _ = book_metrics.toc_pages()
    missing = [name for name in order if name not in pages]
    assert not missing, f'pages of nbs/_toc.yml missing from the built book: {missing}'


# The interactive figures: each page, and how many slider figures it has.
SLIDER_FIGURES = {'01_gradient_descent': 1, '04_adam': 1, '06_gradient_clipping': 1}
GLOSSARY = '96_glossary'

# What a figure plots, as text: it changes when a slider moves the figure to another frame.
PLOTTED_JS = "return JSON.stringify(arguments[0].data.map(t => [t.x, t.y, t.name]));"
# Resources the page loaded from anywhere but the book's own server.
FOREIGN_JS = """return performance.getEntriesByType('resource').map(e => e.name)
  .filter(n => !n.startsWith(location.origin) && !n.startsWith('data:'));"""


@pytest.fixture(scope='module')
def browser():
    if not (HTML / 'index.html').exists():
        pytest.skip(f'browser test skipped: no built book in {HTML} (run `make book` first)')
    paths = book_metrics.find_chromium()
    if paths is None:
        pytest.skip('browser test skipped: no Chromium and chromedriver found (apt-get install chromium chromium-driver)')
    pytest.importorskip('selenium', reason='browser test skipped: selenium is not installed')
    server, driver = book_metrics.serve(HTML), book_metrics.open_browser(paths)
    driver.set_window_size(book_metrics.WIDE, 1000)
    try:
        yield driver, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        driver.quit()
        server.shutdown()


@pytest.mark.parametrize('page', SLIDER_FIGURES)
def test_sliders_move_their_plots(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver, url = browser
    driver.get(f'{url}/{page}.html')
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.querySelectorAll('.slider-figure .js-plotly-plot .slider-rail-touch-rect').length > 0"))
    figures = driver.find_elements(By.CSS_SELECTOR, '.slider-figure .js-plotly-plot')
    assert len(figures) == SLIDER_FIGURES[page], f'{page}: {len(figures)} slider figures'
    assert driver.execute_script('return typeof window.Plotly') == 'object', 'plotly.js loaded from the book'
    for figure in figures:
        rails = figure.find_elements(By.CSS_SELECTOR, '.slider-rail-touch-rect')
        assert rails, 'the figure has sliders'
        for rail in rails:
            before = driver.execute_script(PLOTTED_JS, figure)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", rail)
            # a click near the rail's right end moves the slider from its middle to its last step
            width = rail.rect['width']
            ActionChains(driver).move_to_element_with_offset(rail, int(width / 2) - 4, 0).click().perform()
            WebDriverWait(driver, 10).until(lambda d: d.execute_script(PLOTTED_JS, figure) != before,
                                            message=f'{page}: moving a slider did not change the plot')
    foreign = driver.execute_script(FOREIGN_JS)
    assert not foreign, f'{page} loaded resources from outside the book: {foreign[:5]}'


def test_glossary_page_exists(browser):
    driver, url = browser
    order, _ = book_metrics.toc_pages()
    assert GLOSSARY in order, f'{GLOSSARY} is not in nbs/_toc.yml'
    driver.get(f'{url}/{GLOSSARY}.html')
    text = driver.execute_script("return (document.querySelector('article') || document.body).innerText")
    text = text.replace('\u2019', "'")  # the book's typographic apostrophes
    for term in ['descente de gradient', "taux d'apprentissage", 'biais', 'quantité de mouvement']:
        assert term in text, f'the glossary lacks {term!r}'


def test_takeaways_in_french_in_every_chapter(pages, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    driver, url = browser
    chapters = [name for name, page in pages.items() if page['kind'] == 'chapter']
    missing = []
    for name in chapters:
        driver.get(f'{url}/{name}.html')
        try:
            WebDriverWait(driver, 10).until(lambda d: d.execute_script("""return [...document.querySelectorAll(
                'article details > summary')].some(s => s.textContent.includes('À retenir (en français)'));"""))
        except TimeoutException:
            missing.append(name)
    assert not missing, f'chapters without their takeaways in French: {missing}'


# Each optimizer chapter shows its update rule, unfolded: the function's first line is visible code.
RULE_FUNCTIONS = {'01_gradient_descent': 'sgd_direction', '02_adagrad': 'adagrad_direction',
                  '03_rmsprop': 'rmsprop_direction', '04_adam': 'adam_direction', '07_lion': 'lion_direction',
                  '13_muon': 'muon_direction', '15_schedule_free': 'schedule_free_update'}


@pytest.mark.parametrize('page', RULE_FUNCTIONS)
def test_rule_is_visible(pages, page):
    shown = [first for _, _, first in pages[page]['code_block_sizes']]
    assert any(first.startswith(f'def {RULE_FUNCTIONS[page]}(') for first in shown), \
        f'{page}: the update rule {RULE_FUNCTIONS[page]} is not shown unfolded; visible code blocks start with {shown}'
