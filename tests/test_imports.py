"""Imports run one way: a walk over every module of the package, reading its imports from its source (ast), finds no
cycle, and the layers import only downwards: checks and clip know nothing of the package above them, norm/ takes its
checks from modern_updates.checks and never imports optim/, and inside optim/ the core (base.py) imports the pieces
beside it, never the kernels' modules that register themselves."""
import ast
from pathlib import Path

import modern_updates

PACKAGE = Path(modern_updates.__file__).parent
NAME = 'modern_updates'


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path):
    "The package's modules that the file imports, anywhere in it (functions included)."
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(NAME)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else: target = node.module or ''
            if not target.startswith(NAME): continue
            for alias in node.names:  # `from . import x` imports the module x
                module = f'{target}.{alias.name}'
                found.add(module if module in MODULES else target)
    return found - {name}


MODULES = {module_name(p) for p in PACKAGE.rglob('*.py') if p.name != '_modidx.py'}
GRAPH = {module_name(p): {m for m in imports_of(p) if m in MODULES}
         for p in PACKAGE.rglob('*.py') if p.name != '_modidx.py'}


def reachable(start):
    seen, todo = set(), [start]
    while todo:
        for m in GRAPH[todo.pop()]:
            if m not in seen: seen.add(m); todo.append(m)
    return seen


def test_the_walk_sees_the_imports():
    "The walk itself: base imports the checks and the plans; the optim package imports the kernels that register."
    assert {'modern_updates.checks', 'modern_updates.optim.plan'} <= GRAPH['modern_updates.optim.base']
    assert {'modern_updates.optim.fused_torch', 'modern_updates.optim.triton_step'} <= GRAPH['modern_updates.optim']


def test_no_module_imports_one_that_imports_it_back():
    "No cycle of any length, packages' __init__ aside (a package's __init__ gathers its modules)."
    packages = {m for m in MODULES if (PACKAGE.parent / m.replace('.', '/') / '__init__.py').exists()}
    for name in MODULES - packages:
        back = [m for m in GRAPH[name] if m not in packages and name in reachable(m)]
        assert not back, f'{name} imports {back}, which import it back'


def test_the_layers_import_downwards():
    below_optim = ['modern_updates.checks', 'modern_updates.clip', 'modern_updates.plotting']
    for name in below_optim:
        assert not {m for m in reachable(name) if m.startswith('modern_updates.optim')}, name
    assert not GRAPH['modern_updates.checks'], 'checks imports nothing of the package'
    for name in [m for m in MODULES if m.startswith('modern_updates.norm')]:
        assert not {m for m in reachable(name) if m.startswith('modern_updates.optim')}, f'{name} imports optim/'
    users = [m for m in MODULES if m.startswith('modern_updates.norm.') and 'check_arguments' in
             (PACKAGE.parent / (m.replace('.', '/') + '.py')).read_text(encoding='utf-8')]
    assert users and all('modern_updates.checks' in GRAPH[m] for m in users)


def test_the_core_does_not_import_the_kernels_that_register_with_it():
    kernels = {'modern_updates.optim.fused_torch', 'modern_updates.optim.triton_step'}
    for name in ['modern_updates.optim.base', 'modern_updates.optim.plan', 'modern_updates.optim.kernels',
                 'modern_updates.optim.gradients', 'modern_updates.optim.tensorlist']:
        assert not reachable(name) & kernels, name
    for name in ['modern_updates.optim.gradients', 'modern_updates.optim.kernels', 'modern_updates.optim.plan',
                 'modern_updates.optim.tensorlist', 'modern_updates.optim.low_precision']:
        assert 'modern_updates.optim.base' not in reachable(name), f'{name} imports the core'
