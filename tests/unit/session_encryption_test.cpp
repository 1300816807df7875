// --encryption through the orchestrator: the Welcome carries it to every worker, a change
// (the RPC's session-set) reaches the workers running now, and the wire's value reads back.
#include <gtest/gtest.h>

#include "core/bus/welcome.hpp"
#include "orchestrator/session.hpp"

namespace pw::orchestrator {
namespace {

namespace v1 = ::piecework::v1;

std::vector<Outgoing> hello(Session& session, const std::string& identity, v1::Role role) {
    bus::Incoming in;
    in.identity = identity;
    in.envelope.mutable_hello()->set_role(role);
    in.envelope.mutable_hello()->set_pid(1);
    session.handle(in, Session::Clock::now());
    return std::exchange(session.outbox(), {});
}

const Outgoing* find(const std::vector<Outgoing>& sent, v1::Envelope::BodyCase kind, const std::string& to) {
    for (const Outgoing& message : sent) {
        if (message.envelope.body_case() == kind && message.identity == to) return &message;
    }
    return nullptr;
}

TEST(SessionEncryption, WelcomeCarriesThePolicyAndChangesReachRunningWorkers) {
    SessionConfig config;
    config.encryption = Encryption::require;
    Session session(config);
    const auto sent = hello(session, "peer_worker-1", v1::ROLE_PEER_WORKER);
    const Outgoing* welcome = find(sent, v1::Envelope::kWelcome, "peer_worker-1");
    ASSERT_NE(welcome, nullptr);
    EXPECT_EQ(welcome->envelope.welcome().encryption(), v1::ENCRYPTION_REQUIRE);
    EXPECT_EQ(session.encryption(), Encryption::require);

    hello(session, "verifier-1", v1::ROLE_VERIFIER);
    session.set_encryption(Encryption::off);
    auto changed = std::exchange(session.outbox(), {});
    const Outgoing* policy = find(changed, v1::Envelope::kEncryptionPolicy, "peer_worker-1");
    ASSERT_NE(policy, nullptr);
    EXPECT_EQ(policy->envelope.encryption_policy().encryption(), v1::ENCRYPTION_OFF);
    EXPECT_EQ(find(changed, v1::Envelope::kEncryptionPolicy, "verifier-1"), nullptr);  // workers only
    // The same again: nothing to say.
    session.set_encryption(Encryption::off);
    EXPECT_TRUE(session.outbox().empty());
    // A worker that joins later is welcomed with the new policy.
    const auto later = hello(session, "peer_worker-2", v1::ROLE_PEER_WORKER);
    ASSERT_NE(find(later, v1::Envelope::kWelcome, "peer_worker-2"), nullptr);
    EXPECT_EQ(find(later, v1::Envelope::kWelcome, "peer_worker-2")->envelope.welcome().encryption(), v1::ENCRYPTION_OFF);
}

TEST(SessionEncryption, WireValuesReadBack) {
    for (auto policy : {Encryption::prefer, Encryption::require, Encryption::off}) {
        EXPECT_EQ(bus::from_proto(bus::to_proto(policy)), policy);
    }
    // A Welcome from an orchestrator that knows nothing of encryption: prefer.
    EXPECT_EQ(bus::from_proto(v1::ENCRYPTION_PREFER), Encryption::prefer);
    EXPECT_EQ(bus::from_proto(static_cast<v1::Encryption>(77)), Encryption::prefer);
}

}  // namespace
}  // namespace pw::orchestrator
