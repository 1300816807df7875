// The orchestrator's session as a plain object: stages say things, torrents are added,
// stopped, removed and verified, and the test reads what the session would send. No sockets.
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "core/bus/welcome.hpp"
#include "orchestrator/session.hpp"
#include "orchestrator/session_store.hpp"
#include "test_torrents.hpp"

namespace pw::orchestrator {
namespace {

namespace v1 = ::piecework::v1;
using namespace std::chrono_literals;
using test::make_torrent;
using test::TestTorrent;

// Two pieces of 16 KiB.
TestTorrent two_pieces(const std::string& name = "a.bin") { return make_torrent(name, 16384, {}, 2 * 16384); }

std::string bits(std::initializer_list<std::uint32_t> pieces, std::uint32_t count = 2) {
    std::string out((count + 7) / 8, '\0');
    for (const auto piece : pieces) out[piece / 8] = static_cast<char>(out[piece / 8] | (0x80 >> (piece % 8)));
    return out;
}

struct Rig {
    explicit Rig(SessionConfig config = defaults()) : session(std::move(config)) {}

    static SessionConfig defaults() {
        SessionConfig config;
        config.heartbeat = 1s;
        config.keep_info_after_send = 2s;
        return config;
    }

    Session::Clock::time_point now = Session::Clock::now();
    Session session;

    // Everything sent since the last call.
    std::vector<Outgoing> take() { return std::exchange(session.outbox(), {}); }

    // Pointers into `sent`: never a temporary (see the deleted overload).
    static std::vector<const Outgoing*> of_kind(std::vector<Outgoing>&& sent, v1::Envelope::BodyCase kind,
                                                const std::string& to = {}) = delete;
    static std::size_t count(const std::vector<Outgoing>& sent, v1::Envelope::BodyCase kind,
                             const std::string& to = {}) {
        return of_kind(sent, kind, to).size();
    }
    static std::vector<const Outgoing*> of_kind(const std::vector<Outgoing>& sent, v1::Envelope::BodyCase kind,
                                                const std::string& to = {}) {
        std::vector<const Outgoing*> found;
        for (const Outgoing& message : sent) {
            if (message.envelope.body_case() == kind && (to.empty() || message.identity == to)) {
                found.push_back(&message);
            }
        }
        return found;
    }

    void say(const std::string& identity, v1::Envelope envelope, std::vector<zmq::message_t> frames = {}) {
        bus::Incoming in;
        in.identity = identity;
        in.envelope = std::move(envelope);
        in.frames = std::move(frames);
        session.handle(in, now);
    }

    void hello(const std::string& identity, v1::Role role, std::uint32_t pid = 1) {
        v1::Envelope envelope;
        envelope.mutable_hello()->set_role(role);
        envelope.mutable_hello()->set_pid(pid);
        say(identity, envelope);
    }

    TorrentId add(const TestTorrent& t, bool paused = false, const std::string& path = {}) {
        Session::AddRequest request;
        request.metainfo = t.bytes;
        request.metainfo_path = path;
        request.settings.download_dir = "/downloads";
        request.settings.paused = paused;
        auto added = session.add(std::move(request), now, 1'700'000'000);
        EXPECT_TRUE(added.ok()) << (added.ok() ? "" : added.error().describe());
        return added.ok() ? added->id : TorrentId{};
    }

    void resume(TorrentId id, const std::string& on_disk, bool checked_all = false,
                const std::string& writer = "writer") {
        v1::Envelope envelope;
        envelope.mutable_resume_state()->set_torrent(id.get());
        envelope.mutable_resume_state()->set_checked_all(checked_all);
        std::vector<zmq::message_t> frames;
        frames.emplace_back(on_disk.data(), on_disk.size());
        say(writer, envelope, std::move(frames));
    }

    void seeder(TorrentId id, const std::string& worker, const std::string& peer) {
        v1::Envelope has;
        has.mutable_peer_has()->set_torrent(id.get());
        has.mutable_peer_has()->set_peer(peer);
        has.mutable_peer_has()->set_have_all(true);
        say(worker, has);
    }

    std::vector<v1::Lease> lease(TorrentId id, const std::string& worker, const std::string& peer,
                                 std::uint32_t count = 4) {
        v1::Envelope request;
        request.mutable_work_request()->set_torrent(id.get());
        request.mutable_work_request()->set_peer(peer);
        request.mutable_work_request()->set_count(count);
        say(worker, request);
        const auto sent = take();
        const auto replies = of_kind(sent, v1::Envelope::kLeases, worker);
        EXPECT_EQ(replies.size(), 1u);
        std::vector<v1::Lease> leases;
        if (replies.empty()) return leases;
        EXPECT_EQ(replies[0]->envelope.leases().torrent(), id.get());
        for (const auto& lease : replies[0]->envelope.leases().leases()) leases.push_back(lease);
        return leases;
    }

    void report(const std::string& stage, v1::Envelope::BodyCase kind, TorrentId id,
                const std::vector<v1::Lease>& leases) {
        v1::Envelope envelope;
        google::protobuf::RepeatedPtrField<v1::PieceRef>* refs = nullptr;
        switch (kind) {
            case v1::Envelope::kPiecesDelivered: refs = envelope.mutable_pieces_delivered()->mutable_pieces(); break;
            case v1::Envelope::kPiecesVerified: refs = envelope.mutable_pieces_verified()->mutable_pieces(); break;
            case v1::Envelope::kPiecesWritten: refs = envelope.mutable_pieces_written()->mutable_pieces(); break;
            case v1::Envelope::kPiecesDropped: refs = envelope.mutable_pieces_dropped()->mutable_pieces(); break;
            default: FAIL() << "not a report";
        }
        for (const auto& lease : leases) {
            auto* ref = refs->Add();
            ref->set_torrent(id.get());
            ref->set_piece(lease.piece());
            ref->set_lease_id(lease.lease_id());
        }
        say(stage, envelope);
    }

    // The usual stages, welcomed, with the writer's (empty) ResumeState for `id`.
    void stages(TorrentId id) {
        hello("verifier", v1::ROLE_VERIFIER);
        hello("writer", v1::ROLE_WRITER);
        hello("peer_worker-1", v1::ROLE_PEER_WORKER);
        hello("peer_worker-2", v1::ROLE_PEER_WORKER);
        hello("tracker_svc", v1::ROLE_TRACKER);
        resume(id, bits({}));
        take();
    }
};

// --- welcoming stages and telling them about torrents ---

TEST(Session, AStageIsWelcomedThenToldAboutTheRunningTorrents) {
    Rig rig;
    const TestTorrent t = two_pieces();
    const TorrentId id = rig.add(t);
    const TorrentId paused = rig.add(two_pieces("b.bin"), true);
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER);
    rig.hello("tracker_svc", v1::ROLE_TRACKER);
    const auto sent = rig.take();
    ASSERT_GE(sent.size(), 4u);
    EXPECT_TRUE(sent[0].envelope.has_welcome());
    EXPECT_EQ(sent[0].envelope.welcome().peer_id().substr(0, 8), "-PW0001-");
    EXPECT_TRUE(sent[0].frames.empty());  // schema 3: no .torrent in the Welcome

    const auto added = Rig::of_kind(sent, v1::Envelope::kTorrentAdded, "peer_worker-1");
    ASSERT_EQ(added.size(), 1u);  // the paused one stays unknown to the stages
    EXPECT_EQ(added[0]->envelope.torrent_added().torrent(), id.get());
    EXPECT_NE(added[0]->envelope.torrent_added().torrent(), paused.get());
    EXPECT_EQ(added[0]->envelope.torrent_added().download_dir(), "/downloads");
    const auto info = Rig::of_kind(sent, v1::Envelope::kTorrentInfo, "peer_worker-1");
    ASSERT_EQ(info.size(), 1u);
    ASSERT_EQ(info[0]->frames.size(), 1u);
    EXPECT_EQ(info[0]->frames[0].to_string(), t.torrent.info_bytes());

    // The tracker needs no info dictionary, but the numbers to announce with.
    EXPECT_TRUE(Rig::of_kind(sent, v1::Envelope::kTorrentInfo, "tracker_svc").empty());
    ASSERT_EQ(Rig::of_kind(sent, v1::Envelope::kTorrentAdded, "tracker_svc").size(), 1u);
    const auto stats = Rig::of_kind(sent, v1::Envelope::kTrackerStats, "tracker_svc");
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_EQ(stats[0]->envelope.tracker_stats().left(), 2u * 16384);
}

TEST(Session, AStrangerIsIgnoredAndADuplicateAddChangesNothing) {
    Rig rig;
    const TestTorrent t = two_pieces();
    const TorrentId id = rig.add(t);
    rig.stages(id);
    v1::Envelope written;
    auto* ref = written.mutable_pieces_written()->add_pieces();
    ref->set_torrent(id.get());
    ref->set_piece(0);
    rig.say("nobody", written);
    EXPECT_EQ(rig.session.find(id)->pieces_done(), 0u);

    Session::AddRequest again;
    again.metainfo = t.bytes;
    again.settings.download_dir = "/elsewhere";
    auto added = rig.session.add(std::move(again), rig.now, 0);
    ASSERT_TRUE(added.ok());
    EXPECT_TRUE(added->duplicate);
    EXPECT_EQ(added->id, id);
    EXPECT_EQ(rig.session.torrents().size(), 1u);

    Session::AddRequest hostile;
    hostile.metainfo = "d4:infod4:name1:xee";
    hostile.settings.download_dir = "/downloads";
    auto refused = rig.session.add(std::move(hostile), rig.now, 0);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().describe().find("piece length"), std::string::npos);
}

// --- the download itself ---

// No piece is leased before the writer said what is on disk; a restarted writer's smaller
// report never un-marks a piece.
TEST(Session, LeasesWaitForTheWritersResumeState) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.hello("writer", v1::ROLE_WRITER);
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER);
    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    EXPECT_TRUE(rig.lease(id, "peer_worker-1", "127.0.0.1:9000").empty());

    rig.resume(id, bits({0}));
    const auto notices = rig.session.take_notices();
    ASSERT_EQ(notices.size(), 1u);
    EXPECT_EQ(notices[0].text, "resumed: 1 of 2 pieces already on disk");
    const auto leases = rig.lease(id, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(leases.size(), 1u);
    EXPECT_EQ(leases[0].piece(), 1u);  // never the resumed piece
    rig.resume(id, bits({}));  // a restarted writer knows less
    EXPECT_EQ(rig.session.find(id)->pieces_done(), 1u);
}

TEST(Session, EverythingOnDiskCompletesAtOnceAndIsAnnounced) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.resume(id, bits({0, 1}));
    EXPECT_TRUE(rig.session.all_complete());
    const TorrentState* torrent = rig.session.find(id);
    EXPECT_EQ(torrent->phase(), TorrentPhase::seeding);
    EXPECT_NE(torrent->settings().done_date, 0);
    const auto sent = rig.take();
    const auto stats = Rig::of_kind(sent, v1::Envelope::kTrackerStats, "tracker_svc");
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_EQ(stats[0]->envelope.tracker_stats().event(), v1::TrackerStats::COMPLETED);
    EXPECT_EQ(stats[0]->envelope.tracker_stats().left(), 0u);
}

TEST(Session, PeersAreHandedOutLeasedVerifiedWrittenAndComplete) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.session.find(id)->offer_peer(PeerAddress{"127.0.0.1", 9000});
    rig.session.tick(rig.now, 0);
    const auto sent = rig.take();
    const auto add_peers = Rig::of_kind(sent, v1::Envelope::kAddPeers);
    ASSERT_EQ(add_peers.size(), 1u);
    EXPECT_EQ(add_peers[0]->envelope.add_peers().torrent(), id.get());
    EXPECT_EQ(add_peers[0]->envelope.add_peers().peers(0).port(), 9000u);
    const std::string worker = add_peers[0]->identity;

    v1::Envelope has;
    has.mutable_peer_has()->set_torrent(id.get());
    has.mutable_peer_has()->set_peer("127.0.0.1:9000");
    has.mutable_peer_has()->set_bitfield(true);
    std::vector<zmq::message_t> frames;
    frames.emplace_back(std::string("\xc0", 1));
    rig.say(worker, has, std::move(frames));
    const auto leases = rig.lease(id, worker, "127.0.0.1:9000");
    ASSERT_EQ(leases.size(), 2u);
    rig.report(worker, v1::Envelope::kPiecesDelivered, id, leases);
    rig.report("verifier", v1::Envelope::kPiecesVerified, id, leases);
    EXPECT_FALSE(rig.session.all_complete());
    rig.report("writer", v1::Envelope::kPiecesWritten, id, leases);
    EXPECT_TRUE(rig.session.all_complete());
    EXPECT_EQ(rig.session.find(id)->done_bytes(), 2u * 16384);
}

// --- many torrents ---

TEST(Session, TwoTorrentsKeepTheirOwnPiecesAndLeaseIdsNeverCollide) {
    Rig rig;
    const TorrentId first = rig.add(two_pieces("a.bin"));
    const TorrentId second = rig.add(two_pieces("b.bin"));
    rig.stages(first);
    rig.resume(second, bits({}));
    rig.seeder(first, "peer_worker-1", "127.0.0.1:9000");
    rig.seeder(second, "peer_worker-1", "127.0.0.1:9000");  // one address, two torrents
    const auto a = rig.lease(first, "peer_worker-1", "127.0.0.1:9000");
    const auto b = rig.lease(second, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    std::set<std::uint64_t> ids;
    for (const auto* leases : {&a, &b}) {
        for (const auto& lease : *leases) ids.insert(lease.lease_id());
    }
    EXPECT_EQ(ids.size(), 4u);  // arena slots are tagged with them, whatever the torrent

    rig.report("writer", v1::Envelope::kPiecesWritten, second, b);
    EXPECT_TRUE(rig.session.find(second)->complete());
    EXPECT_EQ(rig.session.find(first)->pieces_done(), 0u);
    EXPECT_FALSE(rig.session.all_complete());
    // A report naming one torrent with the other's lease ids changes nothing of either.
    rig.report("writer", v1::Envelope::kPiecesWritten, TorrentId{99}, a);
    EXPECT_EQ(rig.session.find(first)->pieces_done(), 0u);
}

TEST(Session, PeersAreCappedOverEveryTorrentAndSpreadOverWorkers) {
    SessionConfig config = Rig::defaults();
    config.max_peers = 5;
    Rig rig(config);
    const TorrentId first = rig.add(two_pieces("a.bin"));
    const TorrentId second = rig.add(two_pieces("b.bin"));
    rig.stages(first);
    rig.resume(second, bits({}));
    for (int i = 1; i <= 4; ++i) {
        rig.session.find(first)->offer_peer(PeerAddress{"10.0.0." + std::to_string(i), 1});
        rig.session.find(second)->offer_peer(PeerAddress{"10.0.1." + std::to_string(i), 1});
    }
    rig.session.tick(rig.now, 0);
    std::map<std::string, int> per_worker;
    int total = 0;
    const auto sent = rig.take();
    for (const Outgoing* message : Rig::of_kind(sent, v1::Envelope::kAddPeers)) {
        per_worker[message->identity] += message->envelope.add_peers().peers_size();
        total += message->envelope.add_peers().peers_size();
    }
    EXPECT_EQ(total, 5);
    EXPECT_EQ(per_worker.size(), 2u);
    for (const auto& [worker, count] : per_worker) EXPECT_GE(count, 2) << worker;
}

// --- stop, start, remove, verify ---

TEST(Session, StoppingTellsEveryStageAndStartingTellsThemAgain) {
    Rig rig;
    const TestTorrent t = two_pieces();
    const TorrentId id = rig.add(t);
    rig.stages(id);
    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    const auto leases = rig.lease(id, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(leases.size(), 2u);
    rig.report("writer", v1::Envelope::kPiecesWritten, id, {leases[0]});

    ASSERT_TRUE(rig.session.stop(id));
    EXPECT_EQ(rig.session.find(id)->phase(), TorrentPhase::stopped);
    EXPECT_TRUE(rig.session.find(id)->settings().paused);
    auto sent = rig.take();
    EXPECT_EQ(Rig::of_kind(sent, v1::Envelope::kTorrentRemoved).size(), 5u);  // every stage
    EXPECT_TRUE(rig.lease(id, "peer_worker-1", "127.0.0.1:9000").empty());
    EXPECT_EQ(rig.session.find(id)->pieces_done(), 1u);  // still shown while stopped

    ASSERT_TRUE(rig.session.start(id, rig.now));
    sent = rig.take();
    EXPECT_EQ(Rig::of_kind(sent, v1::Envelope::kTorrentAdded).size(), 5u);
    EXPECT_EQ(Rig::of_kind(sent, v1::Envelope::kTorrentInfo).size(), 4u);  // not the tracker
    // The first ResumeState after a start is the truth: the file lost piece 0 meanwhile.
    rig.resume(id, bits({}));
    EXPECT_EQ(rig.session.find(id)->pieces_done(), 0u);
    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    EXPECT_EQ(rig.lease(id, "peer_worker-1", "127.0.0.1:9000").size(), 2u);
    // A lease of the run before the stop is nobody's now.
    rig.report("writer", v1::Envelope::kPiecesDropped, id, leases);
    EXPECT_EQ(rig.session.find(id)->scheduler()->leases_outstanding(), 2u);
}

TEST(Session, RemovingAStoppedTorrentWithItsDataTellsTheWriterWhatToDelete) {
    Rig rig;
    const TestTorrent t = two_pieces();
    const TorrentId id = rig.add(t);
    rig.stages(id);
    ASSERT_TRUE(rig.session.stop(id));
    rig.take();
    ASSERT_TRUE(rig.session.remove(id, true));
    const auto sent = rig.take();
    // Told of the torrent (and of its files wanted) so that it knows what to delete.
    ASSERT_EQ(sent.size(), 4u);
    EXPECT_EQ(sent[0].identity, "writer");
    EXPECT_TRUE(sent[0].envelope.has_torrent_added());
    EXPECT_TRUE(sent[1].envelope.has_files_wanted());
    EXPECT_TRUE(sent[2].envelope.has_torrent_info());
    ASSERT_TRUE(sent[3].envelope.has_torrent_removed());
    EXPECT_TRUE(sent[3].envelope.torrent_removed().delete_data());
    EXPECT_EQ(rig.session.find(id), nullptr);
    const auto removed = rig.session.take_removed();
    ASSERT_EQ(removed.size(), 1u);
    EXPECT_EQ(removed[0], t.torrent.info_hash());
    EXPECT_FALSE(rig.session.remove(id, false));
}

TEST(Session, AVerifyLeasesNothingUntilTheWriterRehashedAndItsAnswerIsTheTruth) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.resume(id, bits({0, 1}));
    EXPECT_TRUE(rig.session.find(id)->complete());
    rig.take();
    ASSERT_TRUE(rig.session.verify(id));
    const auto sent = rig.take();
    const auto verify = Rig::of_kind(sent, v1::Envelope::kVerifyTorrent, "writer");
    ASSERT_EQ(verify.size(), 1u);
    EXPECT_EQ(verify[0]->envelope.verify_torrent().torrent(), id.get());
    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    EXPECT_TRUE(rig.lease(id, "peer_worker-1", "127.0.0.1:9000").empty());
    rig.resume(id, bits({1}), true);  // piece 0 is bad on disk
    EXPECT_EQ(rig.session.find(id)->phase(), TorrentPhase::downloading);
    const auto again = rig.lease(id, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].piece(), 0u);
}

TEST(Session, TooManyWriteFailuresFailTheTorrentAndTellTheStages) {
    SessionConfig config = Rig::defaults();
    config.torrent.max_write_failures_in_a_row = 2;
    Rig rig(config);
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    for (std::uint32_t piece = 0; piece < 2; ++piece) {
        v1::Envelope failed;
        failed.mutable_write_failed()->set_torrent(id.get());
        failed.mutable_write_failed()->set_piece(piece);
        failed.mutable_write_failed()->set_error("No space left on device");
        rig.say("writer", failed);
    }
    const TorrentState* torrent = rig.session.find(id);
    EXPECT_EQ(torrent->phase(), TorrentPhase::failed);
    EXPECT_NE(torrent->error().find("No space left on device"), std::string::npos);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kTorrentRemoved), 5u);
    // The same failure is said once, however often it comes.
    std::size_t said = 0;
    for (const Notice& notice : rig.session.take_notices()) {
        said += notice.text == "write failed: No space left on device" ? 1 : 0;
    }
    EXPECT_EQ(said, 1u);
    // Starting it again is allowed: the disk may have room now.
    EXPECT_TRUE(rig.session.start(id, rig.now));
}

// The info dictionary's bytes are let go after they were sent and read again from the
// torrent's file for a stage that joins later; a file that no longer holds the torrent is
// refused, never sent.
TEST(Session, ReadsTheTorrentAgainForALateStage) {
    namespace fs = std::filesystem;
    const fs::path path = fs::temp_directory_path() / ("pw-session-" + std::to_string(::getpid()) + ".torrent");
    const TestTorrent t = two_pieces();
    std::ofstream(path, std::ios::binary) << t.bytes;
    struct Remover {
        fs::path path;
        ~Remover() { fs::remove(path); }
    } remover{path};
    SessionConfig config = Rig::defaults();
    config.keep_info_after_send = 0ms;
    Rig rig(config);
    const TorrentId id = rig.add(t, false, path.string());
    rig.session.tick(rig.now + 1ms, 0);  // the bytes go
    rig.hello("verifier", v1::ROLE_VERIFIER);
    const auto sent = rig.take();
    const auto info = Rig::of_kind(sent, v1::Envelope::kTorrentInfo, "verifier");
    ASSERT_EQ(info.size(), 1u);
    const auto sent_info = info[0]->frames.at(0).to_string();
    EXPECT_EQ(sent_info, t.torrent.info_bytes());

    std::ofstream(path, std::ios::binary | std::ios::trunc) << two_pieces("other.bin").bytes;
    rig.session.tick(rig.now + 1s + 2ms, 0);  // idle torrents are visited once a second
    rig.hello("writer", v1::ROLE_WRITER);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kTorrentInfo, "writer"), 0u);
    const auto notices = rig.session.take_notices();
    ASSERT_FALSE(notices.empty());
    EXPECT_NE(notices.back().text.find("no longer the torrent being downloaded"), std::string::npos);
    (void)id;
}

// --- stages that come and go ---

TEST(Session, SlotsFreedGoesOnlyToAKnownWorkerAndOnlyForItsOwnLeases) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    const auto slots_freed = [](const std::string& worker, std::initializer_list<std::uint64_t> ids,
                                bool all_delivered) {
        v1::Envelope envelope;
        auto* freed = envelope.mutable_slots_freed();
        freed->set_worker(worker);
        freed->set_arena_id(77);
        for (const auto lease : ids) freed->add_lease_ids(lease);
        freed->set_all_delivered(all_delivered);
        return envelope;
    };
    rig.say("verifier", slots_freed("writer", {1}, false));         // a stage, but not a worker
    rig.say("verifier", slots_freed("peer_worker-9", {2}, false));  // nobody we know
    rig.say("verifier", slots_freed("peer_worker-1", {}, true));    // only ours to say
    rig.say("peer_worker-2", slots_freed("peer_worker-1", {3}, false));  // not from a worker
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kSlotsFreed), 0u);

    rig.say("verifier", slots_freed("peer_worker-1", {4, 5}, true));
    const auto sent = rig.take();
    const auto forwarded = Rig::of_kind(sent, v1::Envelope::kSlotsFreed);
    ASSERT_EQ(forwarded.size(), 1u);
    EXPECT_EQ(forwarded[0]->identity, "peer_worker-1");
    EXPECT_FALSE(forwarded[0]->envelope.slots_freed().all_delivered());
    EXPECT_EQ(forwarded[0]->envelope.slots_freed().lease_ids_size(), 2);
}

TEST(Session, ALostVerifierFreesEveryWorkersSlotsAndRequeuesDeliveries) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    const auto leases = rig.lease(id, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(leases.size(), 2u);
    rig.report("peer_worker-1", v1::Envelope::kPiecesDelivered, id, leases);
    rig.hello("verifier", v1::ROLE_VERIFIER, 2);  // restarted
    const auto sent = rig.take();
    const auto freed = Rig::of_kind(sent, v1::Envelope::kSlotsFreed);
    ASSERT_EQ(freed.size(), 2u);
    for (const Outgoing* message : freed) EXPECT_TRUE(message->envelope.slots_freed().all_delivered());
    EXPECT_EQ(rig.lease(id, "peer_worker-1", "127.0.0.1:9000").size(), 2u);
}

// Pieces a worker delivered before the first verifier said Hello wait in that verifier's
// queue: its Hello is no restart and re-queues nothing.
TEST(Session, TheFirstVerifierJoiningLateRequeuesNothing) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.hello("writer", v1::ROLE_WRITER);
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER);
    rig.resume(id, bits({}));
    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    const auto leases = rig.lease(id, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(leases.size(), 2u);
    rig.report("peer_worker-1", v1::Envelope::kPiecesDelivered, id, leases);
    rig.hello("verifier", v1::ROLE_VERIFIER);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kSlotsFreed), 0u);
    EXPECT_TRUE(rig.lease(id, "peer_worker-1", "127.0.0.1:9000").empty());
}

TEST(Session, AWorkerSayingGoodbyeGivesItsLeasesBackAtOnce) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(rig.lease(id, "peer_worker-1", "127.0.0.1:9000").size(), 2u);
    v1::Envelope goodbye;
    goodbye.mutable_goodbye()->set_reason("SIGTERM");
    rig.say("peer_worker-1", goodbye);
    EXPECT_EQ(rig.session.stages().identities(v1::ROLE_PEER_WORKER).size(), 1u);
    rig.seeder(id, "peer_worker-2", "127.0.0.1:9001");
    EXPECT_EQ(rig.lease(id, "peer_worker-2", "127.0.0.1:9001").size(), 2u);
}

TEST(Session, WorkerCountersAreAddedUpByTheirGrowthAcrossRestarts) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    const auto beat = [&](const std::string& worker, std::uint64_t down, std::uint32_t peers) {
        v1::Envelope envelope;
        auto* counters = envelope.mutable_heartbeat()->add_torrents();
        counters->set_torrent(id.get());
        counters->set_bytes_downloaded(down);
        counters->set_peers_connected(peers);
        rig.say(worker, envelope);
    };
    beat("peer_worker-1", 1000, 2);
    beat("peer_worker-2", 500, 1);
    beat("peer_worker-1", 3000, 3);
    EXPECT_EQ(rig.session.find(id)->settings().downloaded_ever, 3500u);
    EXPECT_EQ(rig.session.find(id)->peers_connected(), 4u);
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER, 2);  // restarted: counts from zero again
    beat("peer_worker-1", 100, 1);
    EXPECT_EQ(rig.session.find(id)->settings().downloaded_ever, 3600u);
    EXPECT_EQ(rig.session.downloaded_this_run(), 3600u);
}

// --- giving back ---

TEST(Session, WorkersLearnWhatWeHaveOnceTheWriterSaidAndEachPieceAsItIsWritten) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.hello("writer", v1::ROLE_WRITER);
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kPiecesAvailable), 0u);  // not known yet
    rig.resume(id, bits({1}));
    auto sent = rig.take();
    auto available = Rig::of_kind(sent, v1::Envelope::kPiecesAvailable, "peer_worker-1");
    ASSERT_EQ(available.size(), 1u);
    EXPECT_TRUE(available[0]->envelope.pieces_available().bitfield());
    ASSERT_EQ(available[0]->frames.size(), 1u);
    EXPECT_EQ(available[0]->frames[0].to_string(), bits({1}));

    rig.seeder(id, "peer_worker-1", "127.0.0.1:9000");
    const auto leases = rig.lease(id, "peer_worker-1", "127.0.0.1:9000");
    ASSERT_EQ(leases.size(), 1u);
    rig.report("writer", v1::Envelope::kPiecesWritten, id, leases);
    rig.report("writer", v1::Envelope::kPiecesWritten, id, leases);  // again: nothing new
    sent = rig.take();
    available = Rig::of_kind(sent, v1::Envelope::kPiecesAvailable, "peer_worker-1");
    ASSERT_EQ(available.size(), 1u);
    EXPECT_FALSE(available[0]->envelope.pieces_available().have_all());
    ASSERT_EQ(available[0]->envelope.pieces_available().pieces_size(), 1);
    EXPECT_EQ(available[0]->envelope.pieces_available().pieces(0), 0u);

    // A worker that joins later hears the whole set, now every piece.
    rig.hello("peer_worker-2", v1::ROLE_PEER_WORKER);
    sent = rig.take();
    available = Rig::of_kind(sent, v1::Envelope::kPiecesAvailable, "peer_worker-2");
    ASSERT_EQ(available.size(), 1u);
    EXPECT_TRUE(available[0]->envelope.pieces_available().have_all());
}

TEST(Session, OneChokerDecidesForPeersOnEveryWorker) {
    SessionConfig config = Rig::defaults();
    config.heartbeat = 1h;  // the fake stages never beat, and a round is 10 s
    Rig rig(config);
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.resume(id, bits({0, 1}));
    rig.take();
    const auto stats = [&](const std::string& worker, const std::string& peer, std::uint32_t up) {
        v1::Envelope envelope;
        envelope.mutable_peer_stats()->set_torrent(id.get());
        auto* stat = envelope.mutable_peer_stats()->add_peers();
        stat->set_peer(peer);
        stat->set_interested(true);
        stat->set_upload_rate(up);
        rig.say(worker, envelope);
    };
    for (int i = 1; i <= 6; ++i) stats(i % 2 ? "peer_worker-1" : "peer_worker-2", "10.0.0." + std::to_string(i) + ":1", 100u * i);
    auto sent = rig.take();
    std::size_t unchoked = 0;
    for (const Outgoing* decision : Rig::of_kind(sent, v1::Envelope::kChokeDecision)) {
        EXPECT_EQ(decision->envelope.choke_decision().torrent(), id.get());
        unchoked += static_cast<std::size_t>(decision->envelope.choke_decision().unchoke_size());
    }
    EXPECT_EQ(unchoked, 4u);  // the four regular slots, filled as peers became interested
    EXPECT_EQ(rig.session.find(id)->choker().unchoked(), 4u);
    rig.now += Choker::kRound;
    rig.session.tick(rig.now, 0);  // the round adds the optimistic one
    EXPECT_EQ(rig.session.find(id)->choker().unchoked(), 5u);
    v1::Envelope gone;
    gone.mutable_peer_disconnected()->set_torrent(id.get());
    gone.mutable_peer_disconnected()->set_peer("10.0.0.1:1");
    rig.say("peer_worker-1", gone);
    EXPECT_EQ(rig.session.find(id)->choker().size(), 5u);
}

TEST(Session, IncomingPeersCountAgainstTheLimitAndAreNeverDialled) {
    SessionConfig config = Rig::defaults();
    config.max_peers = 3;
    config.heartbeat = 2h;  // the fake stages never beat
    Rig rig(config);
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    for (int port = 40001; port <= 40002; ++port) {
        v1::Envelope connected;
        connected.mutable_peer_connected()->set_torrent(id.get());
        connected.mutable_peer_connected()->set_peer("10.1.1.1:" + std::to_string(port));
        connected.mutable_peer_connected()->set_incoming(true);
        rig.say("peer_worker-1", connected);
    }
    for (int i = 1; i <= 4; ++i) rig.session.find(id)->offer_peer(PeerAddress{"10.0.0." + std::to_string(i), 1});
    rig.session.tick(rig.now, 0);
    int handed_out = 0;
    const auto sent = rig.take();
    for (const Outgoing* add : Rig::of_kind(sent, v1::Envelope::kAddPeers)) handed_out += add->envelope.add_peers().peers_size();
    EXPECT_EQ(handed_out, 1);  // 3 allowed, 2 came to us
    v1::Envelope gone;
    gone.mutable_peer_disconnected()->set_torrent(id.get());
    gone.mutable_peer_disconnected()->set_peer("10.1.1.1:40001");
    rig.say("peer_worker-1", gone);
    rig.now += 1h;
    rig.session.tick(rig.now, 0);
    for (const Outgoing& add : rig.take()) {
        if (!add.envelope.has_add_peers()) continue;
        for (const auto& peer : add.envelope.add_peers().peers()) EXPECT_NE(peer.ip(), "10.1.1.1");
    }
}

TEST(Session, TrackersAreToldThePortReallyListenedOnAndThisRunsTotals) {
    SessionConfig config = Rig::defaults();
    config.listen_port = 51413;
    Rig rig(config);
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    const auto port_told = [&] {
        rig.session.stop(id);
        rig.take();
        rig.session.start(id, rig.now);
        const auto sent = rig.take();
        const auto stats = Rig::of_kind(sent, v1::Envelope::kTrackerStats, "tracker_svc");
        return stats.empty() ? -1 : static_cast<int>(stats[0]->envelope.tracker_stats().port());
    };
    EXPECT_EQ(port_told(), 51413);  // before any worker said otherwise
    v1::Envelope beat;
    beat.mutable_heartbeat()->set_listen_port(0);  // its bind failed
    rig.say("peer_worker-1", beat);
    rig.say("peer_worker-2", beat);
    EXPECT_EQ(port_told(), 0);
    beat.mutable_heartbeat()->set_listen_port(51413);
    auto* counters = beat.mutable_heartbeat()->add_torrents();
    counters->set_torrent(id.get());
    counters->set_bytes_uploaded(7000);
    rig.say("peer_worker-2", beat);
    const auto sent = rig.take();
    const auto stats = Rig::of_kind(sent, v1::Envelope::kTrackerStats, "tracker_svc");
    ASSERT_FALSE(stats.empty());  // a port that changed is told at once
    EXPECT_EQ(stats.back()->envelope.tracker_stats().port(), 51413u);
    EXPECT_EQ(rig.session.find(id)->uploaded_this_run(), 7000u);
    EXPECT_EQ(rig.session.find(id)->settings().uploaded_ever, 7000u);
}

TEST(Session, RateLimitsAreSharedByUseAndFollowTheTorrentsOwn) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.session.find(id)->settings().upload_limited = true;
    rig.session.find(id)->settings().upload_limit_kbps = 100;
    rig.session.set_rate_limits(1'000'000, 0);
    const auto beat = [&](const std::string& worker, std::uint64_t uploaded) {
        v1::Envelope envelope;
        envelope.mutable_heartbeat()->set_bytes_uploaded(uploaded);
        rig.say(worker, envelope);
    };
    beat("peer_worker-1", 0);
    beat("peer_worker-2", 0);
    rig.now += 1s;
    beat("peer_worker-1", 900'000);  // worker 1 uploads, worker 2 idles
    beat("peer_worker-2", 0);
    rig.session.tick(rig.now, 0);
    std::map<std::string, std::uint64_t> share;
    const auto sent = rig.take();
    for (const Outgoing* budget : Rig::of_kind(sent, v1::Envelope::kRateBudget)) {
        share[budget->identity] = budget->envelope.rate_budget().upload_bytes_per_s();
        EXPECT_EQ(budget->envelope.rate_budget().download_bytes_per_s(), 0u);
        ASSERT_EQ(budget->envelope.rate_budget().torrents_size(), 1);
        EXPECT_EQ(budget->envelope.rate_budget().torrents(0).upload_bytes_per_s(), 50'000u);  // 100 kB/s over two
    }
    ASSERT_EQ(share.size(), 2u);
    EXPECT_GT(share["peer_worker-1"], share["peer_worker-2"]);
    EXPECT_GT(share["peer_worker-2"], 0u);  // room to start
    EXPECT_LE(share["peer_worker-1"] + share["peer_worker-2"], 1'000'000u);
    rig.now += 1s;
    rig.session.tick(rig.now, 0);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kRateBudget), 0u);  // unchanged: not sent again
}

// A worker gets its share of the limits with its welcome, before any torrent or peer: the
// next round of budgets is up to a second away, and a second unlimited is a whole download.
TEST(Session, AWorkerThatJoinsGetsItsBudgetBeforeItsTorrents) {
    Rig rig;
    rig.session.set_rate_limits(0, 128'000);
    const TorrentId id = rig.add(two_pieces());
    (void)id;
    rig.take();
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER);
    const auto sent = rig.take();
    const auto budgets = Rig::of_kind(sent, v1::Envelope::kRateBudget, "peer_worker-1");
    ASSERT_EQ(budgets.size(), 1u);
    EXPECT_EQ(budgets[0]->envelope.rate_budget().download_bytes_per_s(), 128'000u);
    const auto torrents = Rig::of_kind(sent, v1::Envelope::kTorrentAdded, "peer_worker-1");
    ASSERT_FALSE(torrents.empty());
    EXPECT_LT(budgets[0], torrents[0]);  // sent first
    // The same worker back after a restart is told again, though nothing changed.
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER, 2);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kRateBudget), 1u);
}

TEST(Session, ASeedReachingItsRatioIsFinished) {
    Rig rig;
    const TorrentId id = rig.add(two_pieces());
    rig.stages(id);
    rig.resume(id, bits({0, 1}));
    rig.session.set_seed_ratio(1.0);
    v1::Envelope beat;
    auto* counters = beat.mutable_heartbeat()->add_torrents();
    counters->set_torrent(id.get());
    counters->set_bytes_uploaded(2 * 16384 - 1);
    rig.say("peer_worker-1", beat);
    rig.session.tick(rig.now, 0);
    EXPECT_FALSE(rig.session.find(id)->finished());
    counters->set_bytes_uploaded(2 * 16384);
    rig.say("peer_worker-1", beat);
    rig.take();
    rig.now += 1s;  // a seed's limits are checked once a second
    rig.session.tick(rig.now, 0);
    EXPECT_TRUE(rig.session.find(id)->finished());
    EXPECT_EQ(rig.session.find(id)->phase(), TorrentPhase::stopped);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kTorrentRemoved), 5u);
}

// --- what outlives a run ---

TEST(SessionStore, SettingsRoundTripAndBrokenFilesAreRefused) {
    TorrentSettings settings;
    settings.download_dir = "/data/x";
    settings.paused = true;
    settings.added_date = 1'700'000'000;
    settings.downloaded_ever = 123456789012ull;
    settings.seed_ratio_limit = 1.5;
    settings.upload_limited = true;
    settings.upload_limit_kbps = 250;
    const std::string bytes = encode_torrent_state(TorrentId{7}, "name", settings);
    auto back = decode_torrent_state(bytes);
    ASSERT_TRUE(back.ok()) << back.error().describe();
    EXPECT_EQ(back->id, TorrentId{7});
    EXPECT_EQ(back->name, "name");
    EXPECT_EQ(back->settings.download_dir, "/data/x");
    EXPECT_TRUE(back->settings.paused);
    EXPECT_EQ(back->settings.downloaded_ever, 123456789012ull);
    EXPECT_DOUBLE_EQ(back->settings.seed_ratio_limit, 1.5);
    EXPECT_EQ(back->settings.upload_limit_kbps, 250u);

    EXPECT_FALSE(decode_torrent_state("").ok());
    EXPECT_FALSE(decode_torrent_state("d7:versioni2ee").ok());
    EXPECT_FALSE(decode_torrent_state("d2:idi0e7:versioni1ee").ok());
    EXPECT_FALSE(decode_torrent_state("d2:idi1e6:paused3:yes7:versioni1ee").ok());

    SessionSettings session;
    session.download_dir = "/data";
    session.speed_limit_down_enabled = true;
    session.speed_limit_down_kbps = 1024;
    auto session_back = decode_session_settings(encode_session_settings(session));
    ASSERT_TRUE(session_back.ok());
    EXPECT_TRUE(session_back->speed_limit_down_enabled);
    EXPECT_EQ(session_back->speed_limit_down_kbps, 1024u);
}

// A state folder of the test's own, empty at the start and removed at the end.
struct StoreDir {
    explicit StoreDir(const std::string& prefix)
        : path(std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()))) {
        std::filesystem::remove_all(path);
    }
    ~StoreDir() { std::filesystem::remove_all(path); }
    StoreDir(const StoreDir&) = delete;
    StoreDir& operator=(const StoreDir&) = delete;
    std::filesystem::path path;
};

TEST(SessionStore, SavedTorrentsComeBackWithTheirIdsAndABrokenOneIsSkipped) {
    namespace fs = std::filesystem;
    const StoreDir scratch("pw-store-");
    const fs::path& dir = scratch.path;
    SessionStore store(dir.string());
    Rig rig;
    const TestTorrent a = two_pieces("a.bin");
    const TestTorrent b = two_pieces("b.bin");
    const TorrentId ida = rig.add(a, true);
    const TorrentId idb = rig.add(b);
    for (const auto* t : {&a, &b}) ASSERT_TRUE(store.save_metainfo(t->torrent.info_hash(), t->bytes).ok());
    ASSERT_TRUE(store.save_state(*rig.session.find(ida)).ok());
    ASSERT_TRUE(store.save_state(*rig.session.find(idb)).ok());
    std::ofstream(dir / "torrents" / (std::string(40, 'e') + ".state")) << "garbage";

    std::vector<std::string> problems;
    const auto saved = store.load(problems);
    ASSERT_EQ(saved.size(), 2u);
    EXPECT_EQ(saved[0].id, ida);
    EXPECT_TRUE(saved[0].settings.paused);
    EXPECT_EQ(saved[0].metainfo, a.bytes);
    EXPECT_EQ(saved[1].id, idb);
    EXPECT_EQ(problems.size(), 1u);

    store.forget(a.torrent.info_hash());
    problems.clear();
    EXPECT_EQ(store.load(problems).size(), 1u);
}

// An idle session saves every torrent each period: a state file whose bytes did not change is
// neither rewritten nor synced (its modification time stays), one that changed is.
TEST(SessionStore, UnchangedStateIsNotWrittenAgain) {
    namespace fs = std::filesystem;
    const StoreDir scratch("pw-store-same-");
    const fs::path& dir = scratch.path;
    SessionStore store(dir.string());
    Rig rig;
    const TestTorrent a = two_pieces("a.bin");
    const TorrentId id = rig.add(a);
    ASSERT_TRUE(store.save_state(*rig.session.find(id)).ok());
    const fs::path file = dir / "torrents" / (to_hex(a.torrent.info_hash()) + ".state");
    const auto old_time = fs::file_time_type::clock::now() - std::chrono::hours(1);
    fs::last_write_time(file, old_time);

    ASSERT_TRUE(store.save_state(*rig.session.find(id)).ok());
    EXPECT_EQ(fs::last_write_time(file), old_time) << "an unchanged state was written again";

    SessionStore reopened(dir.string());  // what it read is what is on disk
    std::vector<std::string> problems;
    ASSERT_TRUE(store.save_metainfo(a.torrent.info_hash(), a.bytes).ok());
    ASSERT_EQ(reopened.load(problems).size(), 1u);
    ASSERT_TRUE(reopened.save_state(*rig.session.find(id)).ok());
    EXPECT_EQ(fs::last_write_time(file), old_time) << "a state just read was written again";

    rig.session.find(id)->settings().paused = true;
    ASSERT_TRUE(reopened.save_state(*rig.session.find(id)).ok());
    EXPECT_NE(fs::last_write_time(file), old_time) << "a changed state was not written";
}

// --- magnets: known by info-hash first ---

TEST(Session, AMagnetFetchesItsMetadataThroughTheWorkersThenGoesOn) {
    Rig rig;
    const TestTorrent t = two_pieces();
    const std::string hex = to_hex(t.torrent.info_hash());
    Session::AddRequest request;
    request.metainfo = "magnet:?xt=urn:btih:" + hex + "&dn=Fetched&x.pe=127.0.0.1:9000&tr=http%3A%2F%2Ft%2Fa";
    request.settings.download_dir = "/downloads";
    auto added = rig.session.add(std::move(request), rig.now, 0);
    ASSERT_TRUE(added.ok()) << added.error().describe();
    TorrentState* torrent = rig.session.find(added->id);
    ASSERT_NE(torrent, nullptr);
    EXPECT_EQ(torrent->phase(), TorrentPhase::metadata);
    EXPECT_EQ(torrent->name(), "Fetched");
    EXPECT_EQ(torrent->trackers(), (std::vector<std::vector<std::string>>{{"http://t/a"}}));
    EXPECT_EQ(rig.session.stall_note().rfind("fetching metadata", 0), 0u) << rig.session.stall_note();
    rig.hello("writer", v1::ROLE_WRITER);
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER);
    rig.hello("tracker_svc", v1::ROLE_TRACKER);
    rig.session.tick(rig.now, 0);
    auto sent = rig.take();
    // Known by info-hash: added everywhere, no info yet; the x.pe peer goes to the worker;
    // the tracker is told something is left.
    EXPECT_EQ(Rig::count(sent, v1::Envelope::kTorrentAdded, "peer_worker-1"), 1u);
    EXPECT_EQ(Rig::count(sent, v1::Envelope::kTorrentInfo), 0u);
    const auto peers = Rig::of_kind(sent, v1::Envelope::kAddPeers, "peer_worker-1");
    ASSERT_EQ(peers.size(), 1u);
    EXPECT_EQ(peers[0]->envelope.add_peers().peers(0).port(), 9000u);
    const auto stats = Rig::of_kind(sent, v1::Envelope::kTrackerStats, "tracker_svc");
    ASSERT_EQ(stats.size(), 1u);
    EXPECT_GT(stats[0]->envelope.tracker_stats().left(), 0u);

    // Metadata that is not the torrent's is ignored.
    const auto found = [&](const std::string& bytes) {
        v1::Envelope envelope;
        envelope.mutable_metadata_found()->set_torrent(added->id.get());
        envelope.mutable_metadata_found()->add_sources("127.0.0.1:9000");
        std::vector<zmq::message_t> frames;
        frames.emplace_back(bytes.data(), bytes.size());
        rig.say("peer_worker-1", envelope, std::move(frames));
    };
    found("d4:name1:xe");
    EXPECT_EQ(torrent->info(), nullptr);
    EXPECT_TRUE(rig.session.take_fetched().empty());

    // The real one: every stage that needs it is told, the .torrent is handed over to be
    // saved, and the torrent waits for the writer like any other.
    found(t.torrent.info_bytes());
    ASSERT_NE(torrent->info(), nullptr);
    EXPECT_EQ(torrent->name(), "a.bin");
    EXPECT_EQ(torrent->phase(), TorrentPhase::checking);
    sent = rig.take();
    EXPECT_EQ(Rig::count(sent, v1::Envelope::kTorrentInfo, "peer_worker-1"), 1u);
    EXPECT_EQ(Rig::count(sent, v1::Envelope::kTorrentInfo, "writer"), 1u);
    EXPECT_EQ(Rig::count(sent, v1::Envelope::kFilesWanted, "writer"), 1u);
    const auto fetched = rig.session.take_fetched();
    ASSERT_EQ(fetched.size(), 1u);
    auto saved = Torrent::parse(fetched[0].metainfo);
    ASSERT_TRUE(saved.ok());
    EXPECT_EQ(saved->info_hash(), t.torrent.info_hash());
    EXPECT_EQ(saved->trackers(), torrent->trackers());
    rig.resume(added->id, bits({}));
    EXPECT_EQ(torrent->phase(), TorrentPhase::downloading);

    // Added again, by link or by file: the same torrent.
    Session::AddRequest again;
    again.metainfo = t.bytes;
    again.settings.download_dir = "/downloads";
    auto duplicate = rig.session.add(std::move(again), rig.now, 0);
    ASSERT_TRUE(duplicate.ok());
    EXPECT_TRUE(duplicate->duplicate);
}

TEST(Session, AMalformedMagnetSaysWhy) {
    Rig rig;
    Session::AddRequest request;
    request.metainfo = "magnet:?xt=urn:btih:1234&dn=x";
    request.settings.download_dir = "/downloads";
    auto refused = rig.session.add(std::move(request), rig.now, 0);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().describe().find("40 hex or 32 base32"), std::string::npos) << refused.error().describe();
}

TEST(SessionStore, AMagnetIsKeptUntilItsTorrentIsSaved) {
    const std::string dir = ::testing::TempDir() + "pw-store-magnet-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    {
        SessionStore store(dir);
        Sha1Digest hash{};
        hash.fill(0x42);
        const std::string link = "magnet:?xt=urn:btih:" + to_hex(hash);
        ASSERT_TRUE(store.save_magnet(hash, link).ok());
        TorrentSettings settings;
        settings.download_dir = "/downloads";
        TorrentState state(TorrentId{3}, hash, "x", {}, settings, TorrentOptions{});
        ASSERT_TRUE(store.save_state(state).ok());
        std::vector<std::string> problems;
        auto loaded = store.load(problems);
        ASSERT_EQ(loaded.size(), 1u) << (problems.empty() ? "" : problems.front());
        EXPECT_EQ(loaded[0].metainfo, link);
        EXPECT_EQ(loaded[0].metainfo_path, store.magnet_path(hash));
        ASSERT_TRUE(store.save_metainfo(hash, "d4:infodee").ok());
        EXPECT_FALSE(std::filesystem::exists(store.magnet_path(hash)));
        problems.clear();
        loaded = store.load(problems);
        ASSERT_EQ(loaded.size(), 1u);
        EXPECT_EQ(loaded[0].metainfo, "d4:infodee");
    }
    std::filesystem::remove_all(dir);
}

TEST(Session, TheDhtNodesPortReachesTheWorkersAndLeavesWithIt) {
    Rig rig;
    rig.hello("peer_worker-1", v1::ROLE_PEER_WORKER);
    rig.hello("dht_svc", v1::ROLE_DHT);
    rig.take();
    v1::Envelope beat;
    beat.mutable_heartbeat()->set_listen_port(6881);
    rig.say("dht_svc", beat);
    auto sent = rig.take();
    auto ports = Rig::of_kind(sent, v1::Envelope::kDhtPort, "peer_worker-1");
    ASSERT_EQ(ports.size(), 1u);
    EXPECT_EQ(ports[0]->envelope.dht_port().port(), 6881u);
    rig.say("dht_svc", beat);  // the same again: nothing new
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kDhtPort), 0u);
    // A worker that joins later is told after its Welcome.
    rig.hello("peer_worker-2", v1::ROLE_PEER_WORKER);
    EXPECT_EQ(Rig::count(rig.take(), v1::Envelope::kDhtPort, "peer_worker-2"), 1u);
    // The DHT stage leaves: no port.
    v1::Envelope goodbye;
    goodbye.mutable_goodbye()->set_reason("test");
    rig.say("dht_svc", goodbye);
    sent = rig.take();
    ports = Rig::of_kind(sent, v1::Envelope::kDhtPort, "peer_worker-1");
    ASSERT_EQ(ports.size(), 1u);
    EXPECT_EQ(ports[0]->envelope.dht_port().port(), 0u);
}

}  // namespace
}  // namespace pw::orchestrator
