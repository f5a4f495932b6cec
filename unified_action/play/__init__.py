"""`uact play`: drive an exported world model from a browser, one frame per action chunk.

controls.py maps held keys and gamepad values onto a card's slots and native actions; session.py holds one
player's rollout (a held-out episode's context, the streaming session, what was played); server.py serves the
page and a WebSocket per tab.
"""
