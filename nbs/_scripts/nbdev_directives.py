"""nbdev cell directives (`#| hide`, `#| export`, ...) read once, for the book and the README.

Jupyter Book knows nothing of nbdev's directives. Each one becomes the cell tag that does the same
thing there, and the directive lines are removed from the source the reader sees.
"""
import re

# A markdown cell that starts with this line is for the README only: the book leaves it out.
README_ONLY = '<!-- readme-only -->'

DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

# directive (and value) -> Jupyter Book cell tag
TAGS = {
    ('hide', ''): 'remove-cell',
    ('default_exp', None): 'remove-cell',
    ('include', 'false'): 'remove-cell',
    ('echo', 'false'): 'remove-input',
    ('hide_input', ''): 'remove-input',
    ('output', 'false'): 'remove-output',
    ('hide_output', ''): 'remove-output',
    ('eval', 'false'): 'skip-execution',
    ('code-fold', None): 'hide-input',
    # The package's code folds behind a toggle; `#| exports` (a chapter's update rule) shows it.
    ('export', None): 'hide-input',
}
# Tags whose cell's code the reader does not see, or that the book does not run.
UNSEEN = {'remove-cell', 'remove-input', 'skip-execution'}


def split_directives(source):
    "The (name, value) directives at the top of a code cell, and the source without them."
    lines = source.splitlines()
    directives = []
    while lines and (m := DIRECTIVE.match(lines[0])):
        directives.append((m.group(1), m.group(2).lower()))
        lines.pop(0)
    return directives, '\n'.join(lines)


def fig_alt(source):
    "The text of a code cell's `#| fig-alt:` directive (its figure's alt text, as in Quarto), or None."
    directives = re.match(r'(?:\s*#\s*\|.*\n?)*', source).group(0)
    m = re.search(r'^\s*#\s*\|\s*fig-alt\s*:\s*(.+?)\s*$', directives, re.M)
    return m.group(1).strip('"\'') if m else None


def tags_for(directives, skip_flags=()):
    "Jupyter Book tags for a cell's nbdev directives; cells under a test flag are not executed."
    tags = []
    for name, value in directives:
        tag = TAGS.get((name, value), TAGS.get((name, None)))
        if name in skip_flags: tag = 'skip-execution'
        if tag and tag not in tags: tags.append(tag)
    return tags


def reader_cells(nb, skip_flags=()):
    "(index, source) of the code cells whose code a reader of the book sees (folded or not) and the book runs."
    cells = []
    for i, cell in enumerate(nb['cells']):
        if cell['cell_type'] != 'code': continue
        source = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
        directives, code = split_directives(source)
        if not UNSEEN & set(tags_for(directives, skip_flags)): cells.append((i, code))
    return cells
