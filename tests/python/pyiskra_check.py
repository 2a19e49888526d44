"""Drives an SG gateway's REST API with the real pyiskra, the way Home Assistant's `iskra`
integration does (config flow: basic info; setup: create the device, init, the gateway's child
devices; coordinator: each device's update_status), and prints what pyiskra read as JSON.

    pyiskra_check.py HOST:PORT [--user U --password P]    # everything, as Home Assistant
    pyiskra_check.py HOST:PORT --basic-info [...]         # the config flow's first call only

Beside pyiskra's values, the `local_time` of the pushed documents (`/get_command`) read before
and after the last round, so the caller can tell which push the values came from.
Errors are printed as {"error": "<pyiskra exception class>", "message": ...}, exit status 0.
"""

import argparse
import asyncio
import base64
import json
import sys

import aiohttp
from pyiskra.adapters import RestAPI
from pyiskra.devices import Device


def measurement(m):
    if m is None:
        return None
    return {"value": m.value, "unit": m.units}


def measurements(ms):
    if ms is None:
        return None
    phases = []
    for p in ms.phases:
        phases.append(
            {
                "U": measurement(p.voltage),
                "I": measurement(p.current),
                "P": measurement(p.active_power),
                "Q": measurement(p.reactive_power),
                "S": measurement(p.apparent_power),
                "PF": measurement(p.power_factor),
                "PA": measurement(p.power_angle),
                "THDUp": measurement(p.thd_voltage),
                "THDI": measurement(p.thd_current),
            }
        )
    t = ms.total
    total = None
    if t is not None:
        total = {
            "P": measurement(t.active_power),
            "Q": measurement(t.reactive_power),
            "S": measurement(t.apparent_power),
            "PF": measurement(t.power_factor),
            "PA": measurement(t.power_angle),
        }
    return {
        "phases": phases,
        "total": total,
        "frequency": measurement(ms.frequency),
        "temperature": measurement(ms.temperature),
    }


def counters(cs):
    if cs is None:
        return None

    def one(c):
        return {
            "value": c.value,
            "unit": c.units,
            "direction": c.direction,
            "type": c.counter_type.value if c.counter_type is not None else None,
        }

    return {
        "non_resettable": [one(c) for c in cs.non_resettable],
        "resettable": [one(c) for c in cs.resettable],
    }


async def local_times(host, auth, index):
    """The `local_time` of the pushed measurements and counters of device `index` (0..2)."""
    headers = {}
    if auth:
        token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        headers["cookie"] = "Authorization=Basic " + token
    suffix = "" if index == 0 else str(index)
    out = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for kind in ("measurements", "counters"):
            url = f"http://{host}/get_command?command=get_{kind}{suffix}"
            async with session.get(url, headers=headers) as response:
                doc = await response.json()
                out[kind] = doc.get("header", {}).get("local_time")
    return out


async def everything(host, auth):
    # Home Assistant's config flow, then its setup entry and one coordinator round.
    info = await RestAPI(ip_address=host, authentication=auth).get_basic_info()
    root = await Device.create_device(RestAPI(ip_address=host, authentication=auth))
    await root.init()
    await root.update_status()
    # One coordinator round over every child, between two looks at the push they read from
    # (every meter is pushed in the same tick, so the Left IR meter's time stands for all).
    before = await local_times(host, auth, 0)
    children = []
    for child in root.get_child_devices():
        await child.update_status()
    after = await local_times(host, auth, 0)
    for child in root.get_child_devices():
        index = child.adapter.device_index
        children.append(
            {
                "index": index,
                "class": type(child).__name__,
                "model": child.model,
                "serial": child.serial,
                "description": child.description,
                "phases": child.phases,
                "measurements": measurements(child.measurements),
                "counters": counters(child.counters),
            }
        )
    return {
        "basic_info": {
            "model": info.model,
            "serial": info.serial,
            "sw_ver": info.sw_ver,
            "description": info.description,
            "location": info.location,
        },
        "gateway": {
            "is_gateway": root.is_gateway,
            "class": type(root).__name__,
            "model": root.model,
            "serial": root.serial,
            "fw_version": root.fw_version,
        },
        "devices": children,
        "local_time_before": before,
        "local_time_after": after,
    }


async def basic_info(host, auth):
    info = await RestAPI(ip_address=host, authentication=auth).get_basic_info()
    return {"model": info.model, "serial": info.serial, "sw_ver": info.sw_ver}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--basic-info", action="store_true")
    args = parser.parse_args()
    auth = None
    if args.user is not None or args.password is not None:
        auth = {"username": args.user or "", "password": args.password or ""}
    run = basic_info if args.basic_info else everything
    try:
        result = asyncio.run(run(args.host, auth))
    except Exception as e:  # pyiskra's exceptions are what the caller checks
        result = {"error": type(e).__name__, "message": str(e)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
