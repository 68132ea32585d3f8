"""The GitHub workflows are valid and safe: they validate against the workflow schema (offline, with
check-jsonschema's bundled copy) and zizmor finds nothing of high severity (actions pinned by commit, least privilege)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / '.github' / 'workflows').glob('*.yml'))
BIN = Path(sys.executable).parent


def tool(name):
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None: pytest.skip(f'{name} is not installed (it is in the dev extra)')
    return str(path)


def test_the_two_workflows_exist():
    assert {w.name for w in WORKFLOWS} >= {'test.yml', 'book.yml'}


def test_workflows_match_the_schema():
    result = subprocess.run([tool('check-jsonschema'), '--builtin-schema', 'vendor.github-workflows', *map(str, WORKFLOWS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_severe():
    result = subprocess.run([tool('zizmor'), '--offline', '--format', 'json', *map(str, WORKFLOWS)],
                            capture_output=True, text=True)
    findings = json.loads(result.stdout or '[]')
    severe = [f"{f['ident']}: {f['desc']}" for f in findings if f['determinations']['severity'] == 'High']
    assert not severe, severe


def test_every_action_is_pinned_by_commit():
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text(encoding='utf-8'))['jobs'].values():
            for step in job.get('steps', []):
                if 'uses' in step:
                    ref = step['uses'].rpartition('@')[2]
                    assert len(ref) == 40 and all(c in '0123456789abcdef' for c in ref), f'{path.name}: {step["uses"]}'


def test_pages_deploy_has_only_the_permissions_it_needs():
    book = yaml.safe_load((ROOT / '.github' / 'workflows' / 'book.yml').read_text(encoding='utf-8'))
    assert book['permissions'] == {'contents': 'read'}
    deploy = book['jobs']['deploy']
    assert deploy['permissions'] == {'pages': 'write', 'id-token': 'write'}
    assert all('permissions' not in job for name, job in book['jobs'].items() if name != 'deploy')
    upload = next(s for s in book['jobs']['build']['steps'] if 'upload-pages-artifact' in s.get('uses', ''))
    assert upload['with']['path'] == '_build/book/_build/html'
