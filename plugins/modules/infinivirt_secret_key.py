#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_secret_key
short_description: Rotate the key that encrypts Infinivirt's stored secrets
version_added: 0.1.0
description:
  - Re-encrypts every secret in the database (display passwords, and later disk keys) from
    the current key (O(secret_key_file) or E(INFINIVIRT_SECRET_KEY)) to the key in
    O(new_key_file), in one transaction. Nothing is re-encrypted if any secret cannot be
    decrypted with the current key.
  - O(new_key_file) is created (mode 0600, 32 random bytes) when it does not exist.
  - Afterwards point O(secret_key_file) at O(new_key_file) on every host that shares the
    database. Running the task again is safe, as secrets already under the new key are left
    alone, so a rotation cut short is finished by a second run.
author:
  - Infinivirt developers (@infinivirt)
extends_documentation_fragment:
  - infinivirt.core.common
  - infinivirt.core.attributes
  - infinivirt.core.attributes.actiongroup_infinivirt
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  new_key_file:
    description:
      - Absolute path of the key to encrypt every secret with.
    type: path
    required: true
seealso:
  - module: infinivirt.core.infinivirt_vm
"""

EXAMPLES = r"""
- name: Move every stored secret to a new key
  infinivirt.core.infinivirt_secret_key:
    secret_key_file: /var/lib/infinivirt/secret.key
    new_key_file: /var/lib/infinivirt/secret-2026.key
  run_once: true
"""

RETURN = r"""
key_id:
  description: Identifier of the new key (a hash of it, never the key itself).
  returned: always
  type: str
  sample: 3f9a1c0d5e7b2a46
rotated:
  description: Number of secrets re-encrypted (to be re-encrypted in check mode).
  returned: always
  type: int
  sample: 3
secrets:
  description: Number of secrets in the database.
  returned: always
  type: int
  sample: 3
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.rotation import rotate_key


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(new_key_file=dict(type="path", required=True, no_log=False)),
        supports_check_mode=True,
    )
    params = module.params
    module.run(lambda ctx: rotate_key(ctx.store, ctx.secret_key_file, params["new_key_file"], module.check_mode))


if __name__ == "__main__":
    main()
