# -*- coding: utf-8 -*-
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


class ModuleDocFragment(object):
    """Attribute documentation shared by the infinivirt.core modules.

    Use in a module as::

        extends_documentation_fragment:
          - infinivirt.core.common
          - infinivirt.core.attributes
          - infinivirt.core.attributes.actiongroup_infinivirt

    and set the ``support`` level of each attribute in the module's own
    ``attributes:`` block (the fragment only provides the descriptions), e.g.::

        attributes:
          check_mode:
            support: full
          diff_mode:
            support: full
          idempotent:
            support: full

    Read-only ``*_info`` modules use ``infinivirt.core.attributes.info_module`` instead
    of setting those three themselves.
    """

    # Standard fragment: descriptions of check_mode, diff_mode and idempotent (the module
    # sets their support level), and the platform attribute (fully filled in here).
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description:
      - Can run in C(check_mode) and return changed status prediction without modifying the target.
  diff_mode:
    description:
      - Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
    details:
      - Runs on Linux hypervisor hosts (QEMU/KVM); other POSIX systems are not supported.
"""

    # For modules that only query state (*_info). Use together with the standard fragment.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
    details:
      - This action does not modify state.
"""

    # Membership of the infinivirt action group (meta/runtime.yml), so that
    # module_defaults: {group/infinivirt.core.infinivirt: {...}} applies to the module.
    ACTIONGROUP_INFINIVIRT = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/infinivirt.core.infinivirt) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - infinivirt.core.infinivirt
"""
