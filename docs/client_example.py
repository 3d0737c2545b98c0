"""Sign in with a wallet, create an API key, and place a signed order.

    python docs/client_example.py http://127.0.0.1:8000 <private key hex>

Needs only ``eth-account`` and ``httpx``. The key's account must be funded and have
passed KYC to trade (the demo traders of ``make run`` have: their keys are
``exchange.services.demo.demo_wallet(1…4)``).
"""

import sys
import time
from decimal import Decimal

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

base_url, private_key = sys.argv[1], sys.argv[2]
wallet = Account.from_key(private_key)
api = httpx.Client(base_url=f"{base_url}/api/v1", timeout=10)

# 1. Sign in: the server's EIP-4361 message, signed with personal_sign.
challenge = api.post("/auth/challenge/", json={"address": wallet.address}).json()
signature = wallet.sign_message(encode_defunct(text=challenge["message"])).signature
session = api.post(
    "/auth/login/", json={"message": challenge["message"], "signature": "0x" + signature.hex()}
).json()
api.headers["Authorization"] = f"Bearer {session['token']}"

# 2. A trading key for a bot (its secret is shown once).
key = api.post("/api-keys/", json={"name": "bot", "scopes": ["read", "trade"]})
bot = httpx.Client(base_url=api.base_url, headers={"X-API-Key": key.json()["secret"]}, timeout=10)

# 3. A limit order, signed as EIP-712 typed data with the domain the server publishes.
eip712 = bot.get("/eip712/").json()
scale = 10 ** eip712["amount_decimals"]  # amounts are signed as integers of 1e-8
order = {
    "market": "ETH-USDC",
    "client_order_id": f"example-{time.time_ns()}",
    "side": "BUY",
    "type": "LIMIT",
    "time_in_force": "GTC",
    "price": "1500.00",
    "quantity": "0.0100",
    "nonce": str(time.time_ns()),
}
message = {
    "account": wallet.address.lower(),
    "market": order["market"],
    "clientOrderId": order["client_order_id"],
    "side": order["side"],
    "orderType": order["type"],
    "timeInForce": order["time_in_force"],
    "price": int(Decimal(order["price"]) * scale),
    "stopPrice": 0,
    "quantity": int(Decimal(order["quantity"]) * scale),
    "quoteQuantity": 0,
    "protectionPrice": 0,
    "displayQuantity": 0,
    "postOnly": False,
    "selfTradePrevention": "EXPIRE_TAKER",
    "expiresAt": 0,
    "nonce": int(order["nonce"]),
}
typed = {k: eip712[k] for k in ("types", "primaryType", "domain")} | {"message": message}
signed = wallet.sign_typed_data(full_message=typed)
order["signature"] = "0x" + signed.signature.hex()

placed = bot.post("/orders/", json=order)
print(placed.status_code, placed.json())
