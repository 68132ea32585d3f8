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
    # The package's code folds behind a toggle: show_doc shows the reader its signature.
    ('export', None): 'hide-input',
}


def split_directives(source):
    "The (name, value) directives at the top of a code cell, and the source without them."
    lines = source.splitlines()
    directives = []
    while lines and (m := DIRECTIVE.match(lines[0])):
        directives.append((m.group(1), m.group(2).lower()))
        lines.pop(0)
    return directives, '\n'.join(lines)


def tags_for(directives, skip_flags=()):
    "Jupyter Book tags for a cell's nbdev directives; cells under a test flag are not executed."
    tags = []
    for name, value in directives:
        tag = TAGS.get((name, value), TAGS.get((name, None)))
        if name in skip_flags: tag = 'skip-execution'
        if tag and tag not in tags: tags.append(tag)
    return tags
